"""Largest measurement errors against analytic phantoms (the numbers docs/validation.md quotes).

    .venv/bin/python Testing/Benchmarks/phantom_errors.py

Phantoms (Testing/Python/phantoms.py) with known geometry are rendered on the five grids of
test_measure_geometry.py (1 mm oblique 20 deg; 0.9 x 1.1 x 1.3 mm oblique 25 deg; 0.6 x 0.6 x 3.5 mm sagittal,
straight and tilted 12 deg; 1 mm sagittal stack) and measured with measure_case; printed per parameter group:
the largest absolute error over all levels and grids, and the in-plane voxel size range. Two phantoms: the
"pathology" phantom of the tests (L1-L5, 5 deg tilt, L2 wedge fracture 17/26 mm, L3 3 mm biconcave dents, L4 8 mm
anterolisthesis) and a lordotic L1-S1 spine (discs 12 mm anterior / 7 mm posterior).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2]))
sys.path.insert(0, str(HERE.parents[1] / "Python"))

import phantoms as ph  # noqa: E402
from test_measure_geometry import GRIDS, PATHOLOGY, in_plane_voxel  # noqa: E402

from SpineAnalysisLib.labels import disc_name, vertebra_name  # noqa: E402
from SpineAnalysisLib.measurements import measure_case  # noqa: E402


def errors(spine, rows) -> dict[str, list[float]]:
    table = {(r.level, r.parameter): r.value for r in rows}
    out: dict[str, list[float]] = {"vertebral heights (mm)": [], "disc heights (mm)": [], "segmental angle (deg)": [],
                                   "slip (%)": [], "lordosis (deg)": [], "sacral slope (deg)": []}

    def add(key, level, parameter, truth):
        value = table.get((level, parameter))
        if value is not None:
            out[key].append(abs(value - truth))

    for v in spine.order:
        for name, truth in zip(("height_anterior_mm", "height_middle_mm", "height_posterior_mm"), spine.body_heights(v)):
            add("vertebral heights (mm)", vertebra_name(v), name, truth)
    for upper, lower in spine.disc_pairs():
        level = disc_name(100 + upper, lower)
        for name, truth in zip(("height_anterior_mm", "height_middle_mm", "height_posterior_mm"), spine.disc_heights(upper)):
            add("disc heights (mm)", level, name, truth)
        add("segmental angle (deg)", level, "segmental_angle_deg", spine.segmental_angle(upper))
        add("slip (%)", vertebra_name(upper), "slip_percent", spine.slip_percent(upper))
    if 26 in spine.bodies:
        add("lordosis (deg)", "L1-S1", "lumbar_lordosis_deg", spine.lordosis())
        add("sacral slope (deg)", "S1", "sacral_slope_deg", spine.sacral_slope())
    return out


def main() -> int:
    phantoms = {"pathology": ph.build_spine(**PATHOLOGY),
                "lordotic L1-S1": ph.build_spine((20, 21, 22, 23, 24, 26), heights=26.0, discs=(12.0, 7.0), top_angle=-25.0)}
    voxels = [in_plane_voxel(*grid) for grid in GRIDS.values()]
    print(f"grids: {', '.join(sorted(GRIDS))}; in-plane voxel {min(voxels):.2f}-{max(voxels):.2f} mm")
    for name, spine in phantoms.items():
        total: dict[str, list[float]] = {}
        for spacing, direction in GRIDS.values():
            label_map, image = ph.render_phantom(spine, spacing, direction)
            for key, values in errors(spine, measure_case(image, label_map)).items():
                total.setdefault(key, []).extend(values)
        print(name)
        for key, values in total.items():
            if values:
                print(f"  {key:24s} n={len(values):3d}  max |error| {max(values):.2f}  mean {np.mean(values):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
