"""How the pipeline fails on degraded scans, whether the failure is flagged, and what the repair does
(prints numbers; not a timed test).

    .venv/bin/python Testing/Benchmarks/stress_noise.py --split training --cases VB1_02,VB2_05 \\
        --levels clean,snr8,snr4,snr2,snr4+bias1+coarse2 [--jsonl OUT.jsonl] [--no-repair] [--force-second-pass]

Cases are shared cases (``../shared/data/lumbar_mri``) of the fixed split the shipped model was
validated on (``SpineAnalysisLib.model.dataset.split_cases``): choose thresholds and variants on
``--split training`` only, then run ``--split validation`` once with them fixed. Each case is
degraded (Testing/Python/degrade.py: Rician noise at an SNR relative to the image's own tissue
signal, a coil bias field, coarser in-plane pixels; the seed is fixed per case and level) and run
through the real pipeline (``segment_image`` with its repair), and scored against the expert labels
with ``evaluation.score_prediction`` (partial labels: only annotated levels count).

Printed per case and level: body Dice, level identification (VerSe rule), ``levels_uncertain``,
confidence, anchor, the estimated SNR (``model.repair.noise_level``), whether a repair pass was
tried and which was kept, with the first pass's Dice/identification when it was replaced, and the
seconds. A failure is "silent" when identification is below 100 % or body Dice below 0.80 and the
result is not marked levels uncertain.

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

from SpineAnalysisLib.evaluation import evaluate_case  # noqa: E402
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
    volume = np.asarray(canonical_raw, np.float32)
    out = np.empty_like(volume)
    for index in range(volume.shape[0]):
        image = sitk.GetImageFromArray(volume[index])
        image.SetSpacing((float(spacing[2]), float(spacing[1])))
        out[index] = sitk.GetArrayViewFromImage(sitk.SmoothingRecursiveGaussian(image, 1.0))
    return out


def _anisotropic(canonical_raw, spacing):
    volume = np.asarray(canonical_raw, np.float32)
    out = np.empty_like(volume)
    for index in range(volume.shape[0]):
        image = sitk.GetImageFromArray(volume[index])
        image.SetSpacing((float(spacing[2]), float(spacing[1])))
        out[index] = sitk.GetArrayViewFromImage(sitk.GradientAnisotropicDiffusion(image, timeStep=0.125, conductanceParameter=2.0, numberOfIterations=5))
    return out


VARIANTS = {"curvature": repair.denoise, "gaussian": _gaussian, "anisotropic": _anisotropic}


def fmt(value, pattern="{:.3f}"):
    return "n/a" if value is None else pattern.format(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=("training", "validation"), required=True)
    parser.add_argument("--cases", help="comma-separated case ids of that split (default: all of it)")
    parser.add_argument("--levels", default="clean,snr8,snr4,snr2")
    parser.add_argument("--data", help="shared lumbar_mri folder (default: ../shared/data/lumbar_mri)")
    parser.add_argument("--jsonl", help="append one JSON line per case and level here")
    parser.add_argument("--no-repair", action="store_true", help="first pass only")
    parser.add_argument("--force-second-pass", action="store_true")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="curvature")
    args = parser.parse_args()

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
    print("case     level                 dice   ident  uncert conf  anchor snr_est repair          first-pass dice/ident  s", flush=True)
    for case_id in wanted:
        for name, settings in levels:
            seed = zlib.crc32(f"{case_id}:{name}".encode())
            transform = None if name == "clean" else (lambda image, s=settings, seed=seed: degraded(image, seed=seed, **s))
            row = evaluate_case(pool[case_id], device="cpu", image_transform=transform, measure=False, repair=not args.no_repair)
            record = row.get("repair")
            first = row.get("first_pass") or row
            repair_text = "-" if record is None else f"tried,kept {record['kept']}"
            print(f"{case_id:8} {name:20} {fmt(row.get('dice_vertebra'))}  {row['identified']:2}/{row['identifiable']:<2}  {str(row['levels_uncertain']):6} "
                  f"{row['confidence']:.2f}  {row['anchor']:6} {fmt(row['stages'].get('noise_snr'), '{:.1f}'):7} {repair_text:15} "
                  f"{fmt(first.get('dice_vertebra'))} {first['identified']}/{first['identifiable']}  {row['seconds']:.0f}", flush=True)
            if args.jsonl:
                with open(args.jsonl, "a", encoding="utf-8") as stream:
                    stream.write(json.dumps({"split": args.split, "level": name, "variant": args.variant, "forced": args.force_second_pass, **row}, default=str) + "\n")


if __name__ == "__main__":
    main()
