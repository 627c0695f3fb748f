"""Clinical answers on the model's own segmentations of the validation split (cases the model was not trained on).

    .venv/bin/python Testing/Benchmarks/check_validation_predictions.py [--data ../shared/data/lumbar_mri] [--fast] [--json OUT]
    .venv/bin/python Testing/Benchmarks/check_validation_predictions.py --predictions DIR [--all]

Runs :func:`SpineAnalysisLib.pipeline.analyze` (segment + measure, the shipped model, CPU) on every image of the
validation split (``model.dataset.split_cases``: VB1, VB2, VB3 and IVD subject groups never used in training) and
prints per case the quality status and reasons, every Genant grade above 0 (with its note), every slip with a
Meyerding grade, the incomplete chain ends, and a summary: cases per status and Genant grades above 0 on the healthy
volunteers (VB2, VB3, IVD, and VB1 cases whose manifest says "none (healthy)"). About 15-20 s per case on 2 cores.

``--predictions DIR`` measures label maps segmented earlier instead (``DIR/<case_id>.nii.gz``, e.g. from
``spineanalysis segment IMAGE -o DIR/<case_id>.nii.gz``) with their images; the quality status then has no labelling
report. ``--all``: every shared image case, not only the validation split (the others were seen in training).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from SpineAnalysisLib.model.dataset import default_data_dir, read_manifest, split_cases  # noqa: E402
from SpineAnalysisLib.measurements import measure_case, measurements_to_table  # noqa: E402
from SpineAnalysisLib.pipeline import analyze  # noqa: E402
from SpineAnalysisLib.quality import assess  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(default_data_dir()))
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--predictions", help="folder of label maps <case_id>.nii.gz to measure instead of segmenting")
    parser.add_argument("--all", action="store_true", help="every shared image case, not only the validation split")
    parser.add_argument("--json", help="also write the per-case results here")
    args = parser.parse_args(argv)
    records = read_manifest(Path(args.data))
    validation = records if args.all else split_cases(records)[1]
    pathology = {row["case_id"]: row["pathology"] for row in csv.DictReader(open(Path(args.data) / "manifest.csv", encoding="utf-8"))}
    results = []
    statuses: Counter = Counter()
    healthy_grades = []
    for record in validation:
        if record.image_file is None:
            continue
        healthy = record.source != "VB1" or pathology.get(record.case_id, "").startswith("none")
        if args.predictions:
            labels = Path(args.predictions, f"{record.case_id}.nii.gz")
            if not labels.is_file():
                continue
            measured = measure_case(sitk.ReadImage(str(record.image_file)), sitk.ReadImage(str(labels)))
            quality = assess(measured).to_dict()
            rows = measurements_to_table(measured)
            summary = {"levels": sorted({r["level"] for r in rows if r["structure"] != "spine"})}
        else:
            with tempfile.TemporaryDirectory() as folder:
                outputs = analyze(record.image_file, folder, device="cpu", fast=args.fast)
                summary = json.loads(Path(outputs["summary"]).read_text(encoding="utf-8"))
                rows = json.loads(Path(outputs["measurements_json"]).read_text(encoding="utf-8"))
            quality = summary["quality"]
        statuses[quality["status"]] += 1
        grades = [f"{r['level']} {r['value']:.0f} ({r['note']})" for r in rows if r["parameter"] == "genant_grade" and r["value"]]
        slips = [f"{r['level']} {r['value']:.1f} % ({r['note']})" for r in rows if r["parameter"] == "slip_percent" and "Meyerding grade" in r["note"]]
        incomplete = sorted({r["level"] for r in rows if r["parameter"] == "genant_grade" and "incomplete" in r["note"]})
        if healthy:
            healthy_grades += [f"{record.case_id} {g}" for g in grades]
        result = {"case": record.case_id, "healthy": healthy, "levels": summary["levels"], "quality": quality, "genant_above_0": grades,
                  "meyerding": slips, "incomplete": incomplete}
        results.append(result)
        print(json.dumps(result, ensure_ascii=False), flush=True)
    print(f"cases {len(results)}; quality {dict(statuses)}; Genant grades above 0 on healthy volunteers: {len(healthy_grades)}")
    for line in healthy_grades:
        print(f"  {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
