"""Shorter fields of view: shared scans cut through the middle of a body, and whether the labels stay right or say
"levels uncertain" (prints one JSON line per case and cut, then a summary; not a timed test).

    .venv/bin/python Testing/Benchmarks/stress_fov.py --split training --cuts below:L1,below:L2,above:L5,above:S1 [--cases VB1_02,VB2_05] [--threads N]

A cut ``below:L2`` keeps the image (and the expert labels) from the centroid of the expert's L2 down: the chain
then starts with a body cut by the top edge, as on a clinical field of view that begins lower. ``above:L5`` keeps the
part above L5's centroid: no sacrum in view, the lowest body cut by the bottom edge. Only the body-labelled sources
(VB1 Siegen, VB2 Chu, VB3 MyoSegmenTUM); a cut through a level the case does not annotate is skipped. A body counts
as annotated in the crop when at least 60 % of its expert voxels are in it (a smaller remnant is unknown, as a level
the case does not annotate). Each crop runs through ``spineanalysis evaluate``'s scoring (``evaluation.evaluate_case``:
the real pipeline with its repair pass; VerSe identification rule). WRONG: an annotated level not identified;
SILENT: wrong and not "levels uncertain".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SpineAnalysisLib import labels as scheme  # noqa: E402
from SpineAnalysisLib.evaluation import evaluate_case  # noqa: E402
from SpineAnalysisLib.model.dataset import default_data_dir, read_manifest, split_cases  # noqa: E402

#: share of an expert body's voxels that must stay in the crop for it to count as annotated there
KEPT_SHARE = 0.6


def crop(image: sitk.Image, labels: sitk.Image, level: int, keep: str) -> tuple[sitk.Image, sitk.Image]:
    """``image`` and ``labels`` cut at the index plane through the centroid of expert label ``level`` across the
    index axis that runs most cranio-caudally; ``keep`` "below" or "above" that plane. Geometry kept (same voxels in
    patient space)."""
    array = sitk.GetArrayFromImage(labels)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    axis = int(np.argmax(np.abs(direction[2])))  # index axis with the largest superior (LPS z) component
    centre = int(round(np.argwhere(array == level)[:, ::-1].mean(axis=0)[axis]))
    index_grows_up = direction[2, axis] > 0
    size, start = list(image.GetSize()), [0, 0, 0]
    if (keep == "below") == index_grows_up:  # keep the low indices
        size[axis] = centre + 1
    else:
        start[axis] = centre
        size[axis] -= centre
    return sitk.RegionOfInterest(image, size, start), sitk.RegionOfInterest(labels, size, start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("training", "validation"), required=True)
    parser.add_argument("--cuts", default="below:L1,below:L2,above:L5,above:S1")
    parser.add_argument("--cases", help="comma-separated case ids of that split (default: all body-labelled cases)")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cuts = []
    for spec in args.cuts.split(","):
        keep, _, name = spec.partition(":")
        if keep not in ("below", "above") or not name:
            raise SystemExit(f"stress_fov: error: a cut is below:LEVEL or above:LEVEL, got {spec!r}")
        cuts.append((spec, keep, name))
    records = split_cases(read_manifest(default_data_dir()))[0 if args.split == "training" else 1]
    records = [r for r in records if r.source in ("VB1", "VB2", "VB3")]
    if args.cases:
        wanted = set(args.cases.split(","))
        records = [r for r in records if r.case_id in wanted]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for record in records:
            image, labels = sitk.ReadImage(str(record.image_file)), sitk.ReadImage(str(record.label_file))
            full = sitk.GetArrayFromImage(labels)
            by_name = {scheme.vertebra_name(label): label for label in record.annotated_labels if scheme.is_vertebra(label)}
            for spec, keep, name in cuts:
                if name not in by_name or not (full == by_name[name]).any():
                    continue
                cropped_image, cropped_labels = crop(image, labels, by_name[name], keep)
                kept = sitk.GetArrayFromImage(cropped_labels)
                annotated = tuple(label for label in record.annotated_labels
                                  if (kept == label).sum() >= KEPT_SHARE * max(1, (full == label).sum()))
                image_file = Path(folder) / f"{record.case_id}_{keep}_{name}_image.nii.gz"
                label_file = image_file.with_name(image_file.name.replace("_image", "_labels"))
                sitk.WriteImage(cropped_image, str(image_file))
                sitk.WriteImage(cropped_labels, str(label_file))
                scored = evaluate_case(dataclasses.replace(record, image_file=image_file, label_file=label_file, annotated_labels=annotated),
                                       device="cpu", measure=False)
                wrong = scored["identified"] < scored["identifiable"]
                row = {"case": record.case_id, "cut": spec, "dice": scored.get("dice_vertebra"), "identified": scored["identified"],
                       "identifiable": scored["identifiable"], "levels_uncertain": scored["levels_uncertain"],
                       "confidence": round(scored["confidence"], 2), "anchor": scored["anchor"], "errors": scored["identification_errors"],
                       "mark": "SILENT" if wrong and not scored["levels_uncertain"] else ("WRONG" if wrong else "")}
                rows.append(row)
                print(json.dumps(row, default=str), flush=True)
    for spec, _, _ in cuts:
        group = [r for r in rows if r["cut"] == spec]
        if group:
            dice = [r["dice"] for r in group if r["dice"] is not None]
            print(f"{spec}: {len(group)} cases, body Dice mean {np.mean(dice):.3f}, identified "
                  f"{sum(r['identified'] for r in group)}/{sum(r['identifiable'] for r in group)}, levels uncertain "
                  f"{sum(r['levels_uncertain'] for r in group)}, wrong {sum(bool(r['mark']) for r in group)}, "
                  f"silent {sum(r['mark'] == 'SILENT' for r in group)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
