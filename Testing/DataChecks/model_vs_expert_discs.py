"""Does the model draw discs of unseen scans like those of its training cases? (prints tables, writes JSON)

The model-mask healthy reference (``reference_healthy.json`` -> ``model``) is built from the shipped model's
segmentations of the shared healthy volunteers, most of which were *training* cases of that model. On scans it
has not seen, its disc and body outlines might be systematically thinner or thicker, which would shift every
DHI z-score. This check measures, disc by disc, the same healthy volunteers twice with this engine:

* on the model's segmentation (``--predictions DIR/<case_id>.nii.gz``, made by ``spineanalysis segment``), and
* on the expert labels (disc = space between consecutive expert bodies, as in the expert reference),

and compares the difference model - expert between the model's training and validation cases (the split in
``Resources/Models/spine-mri-2d/manifest.json``). It also scores the validation cases' model-mask DHI against a
model-mask reference built from the training cases only, and against one built from the other validation
cases (leave-one-subject-out).

    python Testing/DataChecks/model_vs_expert_discs.py --predictions DIR [--data DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SpineAnalysisLib.measure import build_reference  # noqa: E402
from SpineAnalysisLib.measure import disc as disc_module  # noqa: E402
from SpineAnalysisLib.measure import inputs, normative  # noqa: E402
from SpineAnalysisLib.measure.sections import Spine  # noqa: E402
from SpineAnalysisLib.model.dataset import default_data_dir  # noqa: E402

GEOMETRY = ("dhi", "hdr", "height_mean_mm", "dh_bianque")


def disc_values(label_map: sitk.Image) -> dict[tuple[str, str], float]:
    """(level, parameter) -> value of the geometry parameters of every disc (no image: geometry only)."""
    spine = Spine(inputs.load(None, label_map))
    out = {}
    for label in spine.discs():
        rows = disc_module.rows(spine, label)
        between_bodies = normative.measured_between_bodies(next(r[3] for r in rows if r[0] == "dh_bianque"))
        for parameter, value, *_ in rows:
            if parameter in ("dhi", "hdr", "dh_bianque") and not between_bodies:
                continue  # measured on the disc mask: not the reference's way (build_reference does the same)
            if parameter in GEOMETRY and value is not None:
                out[(spine.disc_name(label), parameter)] = float(value)
    return out


def collect(data_dir: Path, predictions: Path) -> list[dict]:
    split = build_reference.model_split()
    rows = []
    for row in build_reference.healthy_cases(data_dir):
        case = row["case_id"]
        path = predictions / f"{case}.nii.gz"
        has_bodies = any(int(v.split(":")[0]) < 100 for v in row["label_values_present"].split())
        if not path.is_file() or not has_bodies:
            continue
        predicted = sitk.ReadImage(str(path))
        ok, why = build_reference.levels_agree(sitk.ReadImage(str(data_dir / row["label_file"])), predicted)
        if not ok:
            print(f"{case}: skipped ({why})")
            continue
        model = disc_values(predicted)
        expert = disc_values(build_reference.expert_label_map(data_dir, row))
        for (level, parameter), value in model.items():
            rows.append({"case": case, "subject": row["subject_group"], "split": split.get(case, "unused"), "level": level,
                         "parameter": parameter, "model": value, "expert": expert.get((level, parameter))})
    return rows


def _stats(values) -> str:
    v = np.asarray(values, float)
    if len(v) == 0:
        return "n 0"
    sem = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return f"n {len(v):3d}  mean {v.mean():+.4f} (SE {sem:.4f})  SD {v.std(ddof=1) if len(v) > 1 else 0:.4f}"


def report(rows: list[dict]) -> dict:
    out: dict = {"difference_model_minus_expert": {}, "validation_z": {}}
    print("\nmodel - expert, per disc (every level where the expert pseudo-disc exists)")
    for parameter in GEOMETRY:
        for split in ("train", "validation"):
            d = [r["model"] - r["expert"] for r in rows if r["parameter"] == parameter and r["split"] == split and r["expert"] is not None]
            rel = [(r["model"] - r["expert"]) / r["expert"] for r in rows if r["parameter"] == parameter and r["split"] == split and r["expert"]]
            print(f"  {parameter:15s} {split:10s} {_stats(d)}   relative {100 * np.mean(rel) if rel else float('nan'):+.1f} %")
            out["difference_model_minus_expert"][f"{parameter}/{split}"] = {"n": len(d), "mean": float(np.mean(d)) if d else None,
                                                                           "relative_mean": float(np.mean(rel)) if rel else None}
    print("\nvalidation cases' model-mask values as z against model-mask references built without them")
    for parameter in ("dhi", "hdr"):
        values = [r for r in rows if r["parameter"] == parameter]
        by_level = defaultdict(list)
        for r in values:
            by_level[r["level"]].append(r)
        for name, pool in (("train-case reference", lambda r, s: r["split"] == "train"),
                           ("all other volunteers (LOSO)", lambda r, s: r["subject"] != s)):
            zs = []
            for r in values:
                if r["split"] != "validation":
                    continue
                ref = np.array([x["model"] for x in by_level[r["level"]] if pool(x, r["subject"])])
                if len(ref) >= 10:
                    zs.append((r["model"] - ref.mean()) / ref.std(ddof=1))
            print(f"  {parameter} vs {name:28s} {_stats(zs)}")
            out["validation_z"][f"{parameter}/{name}"] = {"n": len(zs), "mean": float(np.mean(zs)) if zs else None}
        ztrain = []
        for r in values:
            if r["split"] != "train":
                continue
            ref = np.array([x["model"] for x in by_level[r["level"]] if x["split"] == "train" and x["subject"] != r["subject"]])
            if len(ref) >= 10:
                ztrain.append((r["model"] - ref.mean()) / ref.std(ddof=1))
        print(f"  {parameter} train cases vs train reference (LOSO) {_stats(ztrain)}")
        out["validation_z"][f"{parameter}/train LOSO"] = {"n": len(ztrain), "mean": float(np.mean(ztrain)) if ztrain else None}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(default_data_dir()))
    parser.add_argument("--predictions", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=None, help="write the per-disc rows and the summary here")
    args = parser.parse_args(argv)
    rows = collect(args.data, args.predictions)
    summary = report(rows)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
