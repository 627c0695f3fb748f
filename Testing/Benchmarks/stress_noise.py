"""How the pipeline fails on degraded scans, whether the failure is flagged, and what the repair does
(prints numbers; not a timed test).

    .venv/bin/python Testing/Benchmarks/stress_noise.py --split training --cases VB1_02,VB2_05 \\
        --levels clean,snr8,snr4,snr2,snr4+bias1+coarse2 [--jsonl OUT.jsonl] [--no-repair] [--force-second-pass] [--model M] [--threads N]

Cases are shared cases (``../shared/data/lumbar_mri``) of the fixed split the shipped model was
validated on (``SpineAnalysisLib.model.dataset.split_cases``): choose thresholds and variants on
``--split training`` only, then run ``--split validation`` once with them fixed. Each case is
degraded (Testing/Python/degrade.py: Rician noise at an SNR relative to the image's own tissue
signal, a coil bias field, coarser in-plane pixels; the seed is fixed per case and level) and run
through the real pipeline (``segment_image`` with its repair), and scored against the expert labels
with ``evaluation.score_prediction`` (partial labels: only annotated levels count).

Printed per case and level: the estimated SNR (``model.repair.noise_level``); before (the first
pass alone, as without the repair) and after (what the pipeline returns): body Dice, level
identification (VerSe rule), ``levels_uncertain``, confidence, anchor; which pass was kept; seconds.
A result is wrong when an annotated level is not identified (missed or misnamed) or body Dice is below 0.80, and SILENT when it is
wrong and not marked levels uncertain. Then per level, before and after: mean Dice, identified
levels, wrong and silent cases, repairs tried and kept. ``--summarise JSONL`` reprints an earlier run.

Level names: ``clean``; ``snrN`` Rician noise at SNR N; ``biasB`` bias field exp(B * ramp);
``coarseF`` in-plane pixels F times coarser; joined with ``+``.
``--force-second-pass`` runs the second pass on every case (to choose the variant; the rule is
bypassed) and ``--variant`` swaps the denoising filter (curvature, gaussian, anisotropic).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2]))
sys.path.insert(0, str(HERE.parents[1] / "Python"))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from degrade import degraded  # noqa: E402

from SpineAnalysisLib.evaluation import IDENTIFICATION_RADIUS_MM, evaluate_case  # noqa: E402
from SpineAnalysisLib.model import repair  # noqa: E402
from SpineAnalysisLib.model.dataset import default_data_dir, read_manifest, split_cases  # noqa: E402


def parse_level(name: str) -> dict:
    settings = {"snr": None, "bias": 0.0, "factor": 1}
    if name == "clean":
        return settings
    for part in name.split("+"):
        match = re.fullmatch(r"(snr|bias|coarse)([0-9.]+)", part)
        if not match:
            raise SystemExit(f"stress_noise: error: unknown degradation {part!r}")
        key = {"snr": "snr", "bias": "bias", "coarse": "factor"}[match.group(1)]
        settings[key] = int(match.group(2)) if key == "factor" else float(match.group(2))
    return settings


def _gaussian(canonical_raw, spacing):
    return repair.filter_slices(canonical_raw, spacing, lambda image: sitk.SmoothingRecursiveGaussian(image, 1.0))


def _anisotropic(canonical_raw, spacing):
    return repair.filter_slices(canonical_raw, spacing, lambda image: sitk.GradientAnisotropicDiffusion(image, timeStep=0.125, conductanceParameter=2.0, numberOfIterations=5))


VARIANTS = {"curvature": repair.denoise, "gaussian": _gaussian, "anisotropic": _anisotropic}


def fmt(value, pattern="{:.3f}"):
    return "n/a" if value is None else pattern.format(value)


def levels_wrong(p: dict) -> bool:
    """Bodies labelled and an annotated level not identified (missed or misnamed; VerSe rule)."""
    return p["labelled"] and p["identified"] < p["identifiable"]


def misnamed(errors: list[str]) -> int:
    """Annotated levels where a predicted body lies (within the VerSe radius) but carries another name,
    from ``evaluation.identification``'s messages ("L2: nearest is L3 at 3 mm"); the other errors are
    levels missed."""
    count = 0
    for error in errors:
        match = re.search(r"nearest is \S+ at ([0-9.]+) mm$", error)
        count += bool(match and float(match.group(1)) <= IDENTIFICATION_RADIUS_MM)
    return count


def masks_poor(p: dict) -> bool:
    return p["dice"] is not None and p["dice"] < 0.80


def flagged(p: dict) -> bool:
    """The result says it is not to be trusted: levels uncertain, nothing labelled, or a noisy-image warning."""
    return p["uncertain"] or not p["labelled"] or p["noisy_warning"]


def before_after(row: dict) -> tuple[dict, dict]:
    """(first pass alone, what the pipeline returned) for one stress row. The noisy-image warning is
    new with the repair, so "before" has none."""
    record = row.get("repair")
    noisy = any(w.startswith("the image is noisy") for w in row.get("warnings", []))
    after = {"dice": row.get("dice_vertebra"), "identified": row["identified"], "identifiable": row["identifiable"],
             "uncertain": row["levels_uncertain"], "confidence": row["confidence"], "anchor": row["anchor"],
             "labelled": bool(row["anchor"]), "noisy_warning": noisy, "misnamed": misnamed(row["identification_errors"])}
    if record is None:
        return {**after, "noisy_warning": False}, after
    scored = row.get("first_pass") or row  # the first pass's masks were kept unless a second pass replaced them
    first = record["first_pass"]
    before = {"dice": scored.get("dice_vertebra"), "identified": scored["identified"], "identifiable": scored["identifiable"],
              "uncertain": first["levels_uncertain"], "confidence": first["confidence"], "anchor": first["anchor"],
              "labelled": bool(first["levels"]), "noisy_warning": False, "misnamed": misnamed(scored["identification_errors"])}
    return before, after


HEADER = ("case     level                snr_est | before: dice  ident uncert conf  anchor       | after: dice  ident uncert conf  anchor warn kept   | s\n"
          "(LEVELS: levels wrong and not uncertain; SILENT: wrong levels or Dice < 0.80 and not flagged by uncertain levels, an empty result or a noisy-image warning)")


def _mark(p: dict) -> str:
    if levels_wrong(p) and not p["uncertain"]:
        return "LEVELS"
    return "SILENT" if (levels_wrong(p) or masks_poor(p)) and not flagged(p) else ""


def _snr(row: dict):
    """The estimated SNR of a row (``noise``; rows written before it moved there: ``stages``)."""
    return (row.get("noise") or {}).get("snr", row["stages"].get("noise_snr"))


def format_row(row: dict) -> str:
    before, after = before_after(row)
    record = row.get("repair")

    def part(p):
        return f"{fmt(p['dice'])} {p['identified']:2}/{p['identifiable']:<2} {str(p['uncertain']):6} {p['confidence']:.2f}  {p['anchor'] or '-':6}"

    kept = "-" if record is None else record["kept"]
    return (f"{row['case_id']:8} {row['level']:20} {fmt(_snr(row), '{:.1f}'):7} | {part(before)} {_mark(before):6} | "
            f"{part(after)} {'yes' if after['noisy_warning'] else 'no':4} {kept:6} | {row['seconds']:.0f} {_mark(after)}")


def summarise(rows: list[dict]) -> str:
    lines = []
    for level in dict.fromkeys(r["level"] for r in rows):
        group = [r for r in rows if r["level"] == level]
        pairs = [before_after(r) for r in group]
        for name, index in (("before", 0), ("after", 1)):
            parts = [p[index] for p in pairs]
            dice = [p["dice"] for p in parts if p["dice"] is not None]
            lines.append(
                f"{level:20} {name:6}: {len(group)} cases, body Dice mean {fmt(float(np.mean(dice)) if dice else None)}, "
                f"identified {sum(p['identified'] for p in parts)}/{sum(p['identifiable'] for p in parts)}, "
                f"nothing labelled {sum(not p['labelled'] for p in parts)}, levels wrong {sum(levels_wrong(p) for p in parts)} "
                f"(not uncertain {sum(levels_wrong(p) and not p['uncertain'] for p in parts)}; misnamed, not uncertain "
                f"{sum(bool(p['misnamed']) and not p['uncertain'] for p in parts)}), Dice < 0.80 {sum(masks_poor(p) for p in parts)}, "
                f"silent {sum(bool(_mark(p) == 'SILENT' or _mark(p) == 'LEVELS') for p in parts)}, levels uncertain {sum(p['uncertain'] for p in parts)}")
        tried = sum(r.get("repair") is not None for r in group)
        lines.append(f"{level:20} repair tried on {tried}, second pass kept on {sum((r.get('repair') or {}).get('kept') == 'second' for r in group)}, "
                     f"seconds median {np.median([r['seconds'] for r in group]):.0f}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=("training", "validation"))
    parser.add_argument("--cases", help="comma-separated case ids of that split (default: all of it)")
    parser.add_argument("--levels", default="clean,snr8,snr4,snr2")
    parser.add_argument("--data", help="shared lumbar_mri folder (default: ../shared/data/lumbar_mri)")
    parser.add_argument("--jsonl", help="append one JSON line per case and level here")
    parser.add_argument("--no-repair", action="store_true", help="first pass only")
    parser.add_argument("--force-second-pass", action="store_true")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="curvature")
    parser.add_argument("--model", help="model name, name@version or folder (default: the shipped model)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--summarise", metavar="JSONL", help="only print the table and summary of an earlier run's --jsonl")
    args = parser.parse_args()
    if args.summarise:
        rows = [json.loads(line) for line in open(args.summarise, encoding="utf-8")]
        print(HEADER)
        print("\n".join(format_row(r) for r in rows))
        print(summarise(rows))
        return

    if not args.split:
        raise SystemExit("stress_noise: error: --split training|validation is needed")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    records = read_manifest(Path(args.data) if args.data else default_data_dir())
    train, validation = split_cases(records)
    pool = {r.case_id: r for r in (train if args.split == "training" else validation)}
    wanted = args.cases.split(",") if args.cases else list(pool)
    missing = [c for c in wanted if c not in pool]
    if missing:
        raise SystemExit(f"stress_noise: error: not in the {args.split} split: {', '.join(missing)}")
    levels = [(name, parse_level(name)) for name in args.levels.split(",")]
    repair.denoise = VARIANTS[args.variant]
    if args.force_second_pass:
        original = repair.repair_reasons
        repair.repair_reasons = lambda report, noise: original(report, noise) or ["forced (stress test)"]

    print(f"stress_noise: {args.split} split, {len(wanted)} cases, levels {args.levels}, variant {args.variant}, "
          f"repair {'off' if args.no_repair else 'on'}{' (forced)' if args.force_second_pass else ''}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    print(HEADER, flush=True)
    rows = []
    for case_id in wanted:
        for name, settings in levels:
            seed = zlib.crc32(f"{case_id}:{name}".encode())
            transform = None if name == "clean" else (lambda image, s=settings, seed=seed: degraded(image, seed=seed, **s))
            row = evaluate_case(pool[case_id], model_name=args.model, device="cpu", image_transform=transform, measure=False, repair=not args.no_repair)
            row = {"split": args.split, "level": name, "variant": args.variant, "forced": args.force_second_pass, **row}
            rows.append(row)
            print(format_row(row), flush=True)
            if args.jsonl:
                with open(args.jsonl, "a", encoding="utf-8") as stream:
                    stream.write(json.dumps(row, default=str) + "\n")
    print(summarise(rows))


if __name__ == "__main__":
    main()
