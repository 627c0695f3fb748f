"""Meyerding slip on the shared expert masks of healthy volunteers: is there a bias?

    .venv/bin/python Testing/Benchmarks/slip_on_expert_masks.py [--data ../shared/data/lumbar_mri] [--json OUT]

Measures every ``labels/VB*.nii.gz`` (vertebral bodies drawn by experts: MyoSegmenTUM VB3 L1-L5, Chu VB2 T11-L5,
Siegen VB1 T10-S1) with :func:`SpineAnalysisLib.measurements.measure_case` and prints, per dataset and over all,
the mean, SD and range of ``slip_percent`` and the share of slips with |slip| >= 5 % (the Meyerding "no slip"
bound). The VB3 and VB2 volunteers are healthy: their slips should scatter about 0. VB1 holds pathologies
(two L5-S1 anterolistheses). Also printed: the same statistics for corners taken as the extreme mask pixels within
2 mm of each endplate (a check whether the fitted virtual corners cause a bias).
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
    parser.add_argument("--json", help="also write the per-level results here")
    args = parser.parse_args(argv)
    files = sorted(Path(args.data, "labels").glob("VB*.nii.gz"))
    if not files:
        print(f"no expert masks under {args.data}/labels", file=sys.stderr)
        return 2
    engine, extreme = defaultdict(list), defaultdict(list)
    for path in files:
        source = path.name[:3]
        label_map = sitk.ReadImage(str(path))
        for row in measure_case(None, label_map):
            if row.parameter == "slip_percent" and row.value is not None:
                engine[source].append(row.value)
                engine[f"{source} {row.level}"].append(row.value)
        spine = Spine(inputs.load(None, label_map))
        for v in spine.vertebrae:
            below = spine.vertebra_below(v)
            if below is not None:
                value = _mask_corner_slip(spine, v, below)
                if value is not None:
                    extreme[source].append(value)
    engine["healthy (VB2+VB3)"] = engine["VB2"] + engine["VB3"]
    extreme["healthy (VB2+VB3)"] = extreme["VB2"] + extreme["VB3"]
    result = {"engine": {k: _summary(v) for k, v in sorted(engine.items())},
              "mask_extreme_pixels": {k: _summary(v) for k, v in sorted(extreme.items())}}
    for kind, table in result.items():
        print(kind)
        for key, stats in table.items():
            print(f"  {key:20s} {json.dumps(stats)}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
