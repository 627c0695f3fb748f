"""The measurement engine on the shared expert masks: slip bias, fracture grades, quality status.

    .venv/bin/python Testing/Benchmarks/check_expert_masks.py [--data ../shared/data/lumbar_mri] [--no-images] [--json OUT]

Measures every ``labels/VB*.nii.gz`` (vertebral bodies drawn by experts: MyoSegmenTUM VB3 L1-L5 and Chu VB2 T11-L5,
healthy volunteers; Siegen VB1 T10-S1, some with pathologies) with :func:`SpineAnalysisLib.measurements.measure_case`
(with its image unless ``--no-images``) and prints

* ``slip``: per dataset, level and over the healthy VB2+VB3, the mean, SD and range of ``slip_percent`` and the
  share with |slip| >= 5 % (the Meyerding "no slip" bound); the healthy volunteers' slips should scatter about 0;
* ``slip_mask_extreme_pixels``: the same with corners taken as the posterior-most mask pixels within 2 mm of each
  endplate, projected on the lower endplate (whether fitted virtual corners cause a bias);
* ``genant``: every body with a Genant grade above 0 (on healthy volunteers: false fracture grades, or real
  deformities in the expert masks), the bodies found incomplete, and every focal endplate notch (Schmorl node)
  bridged for the middle height (:mod:`SpineAnalysisLib.measure.endplate_notch`);
* ``lumbar_lordosis_deg``: its range over the cases that have one;
* ``quality``: the quality status of every case (:mod:`SpineAnalysisLib.quality`) and every withheld value.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from SpineAnalysisLib import quality  # noqa: E402
from SpineAnalysisLib.measure import inputs  # noqa: E402
from SpineAnalysisLib.measure.sections import Spine  # noqa: E402
from SpineAnalysisLib.measurements import measure_case  # noqa: E402


def _mask_corner_slip(spine: Spine, upper: int, lower: int, band: float = 2.0) -> float | None:
    """Slip from the posterior-most mask pixels within ``band`` mm of the two facing endplates (no fitted corners)."""
    su, sl = spine.section(upper), spine.section(lower)
    if su.quad is None or sl.quad is None:
        return None
    e = sl.quad.AS - sl.quad.PS
    unit = e / np.linalg.norm(e)
    normal = np.array([-unit[1], unit[0]])

    def posterior_most(points, corner):
        near = points[np.abs((points - corner) @ normal) <= band]
        return near[np.argmin(near @ unit)] if len(near) else None

    pu, pl = posterior_most(su.points(), su.quad.PI), posterior_most(sl.points(), sl.quad.PS)
    if pu is None or pl is None:
        return None
    return 100.0 * float((pu - pl) @ e) / float(e @ e)


def _summary(values) -> dict:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {"n": 0}
    return {"n": int(v.size), "mean": round(float(v.mean()), 2), "sd": round(float(v.std(ddof=1)) if v.size > 1 else 0.0, 2),
            "min": round(float(v.min()), 2), "max": round(float(v.max()), 2), "abs_ge_5": round(float(np.mean(np.abs(v) >= 5.0)), 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "lumbar_mri"))
    parser.add_argument("--no-images", action="store_true", help="measure the label maps alone")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    files = sorted(Path(args.data, "labels").glob("VB*.nii.gz"))
    if not files:
        print(f"no expert masks under {args.data}/labels", file=sys.stderr)
        return 2
    engine, extreme = defaultdict(list), defaultdict(list)
    statuses, graded, incomplete, withheld, lordosis, notches = defaultdict(list), [], [], [], [], []
    for path in files:
        source = path.name[:3]
        label_map = sitk.ReadImage(str(path))
        image_path = Path(args.data, "images", path.name)
        image = None if args.no_images or not image_path.is_file() else sitk.ReadImage(str(image_path))
        rows = measure_case(image, label_map)
        statuses[quality.assess(rows).status].append(path.name[:-7])
        for row in rows:
            if row.parameter == "slip_percent" and row.value is not None:
                engine[source].append(row.value)
                engine[f"{source} {row.level}"].append(row.value)
            if row.parameter == "genant_grade" and row.value:
                graded.append(f"{path.name[:-7]} {row.level} grade {row.value:.0f} ({row.note})")
            if row.parameter == "genant_grade" and "incomplete" in row.note:
                incomplete.append(f"{path.name[:-7]} {row.level}")
            if row.parameter == "height_middle_mm" and "notch" in row.note:
                notches.append(f"{path.name[:-7]} {row.level} {row.value:.1f} mm ({row.note})")
            if row.parameter == "lumbar_lordosis_deg" and row.value is not None:
                lordosis.append(row.value)
            if row.note.startswith(quality.WITHHELD):
                withheld.append(f"{path.name[:-7]} {row.level} {row.parameter}")
        spine = Spine(inputs.load(None, label_map))
        for v in spine.vertebrae:
            below = spine.vertebra_below(v)
            if below is not None:
                value = _mask_corner_slip(spine, v, below)
                if value is not None:
                    extreme[source].append(value)
    engine["healthy (VB2+VB3)"] = engine["VB2"] + engine["VB3"]
    extreme["healthy (VB2+VB3)"] = extreme["VB2"] + extreme["VB3"]
    result = {"slip": {k: _summary(v) for k, v in sorted(engine.items())},
              "slip_mask_extreme_pixels": {k: _summary(v) for k, v in sorted(extreme.items())},
              "lumbar_lordosis_deg": _summary(lordosis), "genant_above_0": graded, "incomplete": incomplete,
              "focal_notches": notches,
              "quality": {status: len(cases) for status, cases in statuses.items()},
              "not_ok": {status: cases for status, cases in statuses.items() if status != "ok"}, "withheld": withheld}
    for kind, table in result.items():
        print(kind)
        items = table.items() if isinstance(table, dict) else enumerate(table)
        if kind == "lumbar_lordosis_deg":
            items = [("all", table)]
        for key, stats in items:
            print(f"  {key!s:20s} {json.dumps(stats)}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
