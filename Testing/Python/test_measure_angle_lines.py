"""Endplate directions for angles come from their own line fits, apart from the height corners.

Angles (segmental angle, lordosis, sacral slope) use each vertebral endplate's line fitted with 5 % of it trimmed at
both ends and averaged over planes 0, +-2 and +-4 mm (``sections.ANGLE_PLATE_TRIM``, ``ANGLE_SLAB_HALF_WIDTHS_MM``);
the corners that heights, ratios, grades and slips use are unchanged. Checked against the analytic phantoms of
test_measure_geometry.py on its five grids: with corner-to-corner directions (the behaviour up to 2026-12-07) the
pathology phantom's largest segmental-angle error was 2.29 degrees and the lordotic phantom's lordosis and sacral
slope errors 0.63 / 0.62 degrees (``Testing/Benchmarks/phantom_errors.py``).
"""

from __future__ import annotations

import pytest

import phantoms as ph
from test_measure_geometry import GRIDS, PATHOLOGY
from SpineAnalysisLib.labels import disc_name
from SpineAnalysisLib.measure import sections
from SpineAnalysisLib.measurements import measure_case

LORDOTIC = dict(levels=(20, 21, 22, 23, 24, 26), heights=26.0, discs=(12.0, 7.0), top_angle=-25.0)


def _rows(spine, grid):
    label_map, image = ph.render_phantom(spine, *GRIDS[grid])
    return {(r.level, r.parameter): r for r in measure_case(image, label_map)}


@pytest.fixture(scope="module")
def pathology_rows():
    spine = ph.build_spine(**PATHOLOGY)
    return spine, {grid: _rows(spine, grid) for grid in GRIDS}


def test_segmental_angles_of_the_pathology_phantom_within_1_5_degrees_on_every_grid(pathology_rows):
    spine, by_grid = pathology_rows
    errors = []
    for grid, rows in by_grid.items():
        for upper, _lower in spine.disc_pairs():
            row = rows[(disc_name(100 + upper), "segmental_angle_deg")]
            assert row.value is not None, f"{grid} {row.level}: {row.note}"
            errors.append((abs(row.value - spine.segmental_angle(upper)), grid, row.level))
    assert max(errors)[0] <= 1.5, max(errors)


def test_lordosis_and_sacral_slope_of_the_lordotic_phantom_within_half_a_degree():
    spine = ph.build_spine(**LORDOTIC)
    for grid in ("oblique-20deg-1mm", "sagittal-0.6x0.6x3.5mm-tilted-12deg"):
        rows = _rows(spine, grid)
        assert rows[("L1-S1", "lumbar_lordosis_deg")].value == pytest.approx(spine.lordosis(), abs=0.5), grid
        assert rows[("S1", "sacral_slope_deg")].value == pytest.approx(spine.sacral_slope(), abs=0.5), grid


def test_the_angle_lines_leave_every_other_value_unchanged(pathology_rows, monkeypatch):
    spine, by_grid = pathology_rows
    grid = "oblique-25deg-0.9x1.1x1.3mm"
    monkeypatch.setattr(sections, "ANGLE_PLATE_TRIM", None)  # corner-to-corner directions
    corner_rows = _rows(spine, grid)
    angles = {"segmental_angle_deg", "lumbar_lordosis_deg", "sacral_slope_deg", "cobb_max_deg"}
    changed = [key for key, row in by_grid[grid].items()
               if key[1] not in angles and row.value != corner_rows[key].value]
    assert not changed
    moved = [key for key, row in by_grid[grid].items()
             if key[1] == "segmental_angle_deg" and row.value != corner_rows[key].value]
    assert moved  # the angles do come from the separate lines
