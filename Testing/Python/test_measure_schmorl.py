"""A focal endplate notch (Schmorl node) is not a biconcave fracture; a broad depression of the same depth is.

Phantom L3 (35 mm deep, 26 mm high) with a pit in the middle of both endplates, rendered on real grids, written
to NIfTI and measured from the files (measure/endplate_notch.py). Node: 6 mm wide at the endplate, 4 mm at its
floor, 4 mm deep (17 % of the AP depth: focal). Broad: the same 4 mm depth over 20 mm (14 mm at the floor): a
biconcave fracture, middle height 26 - 2 x 4 = 18 mm, ratio 0.69 -> 31 % loss against L3's normal 1.00: grade 2.
"""

from __future__ import annotations

import pytest
import SimpleITK as sitk

import phantoms as ph
from SpineAnalysisLib.measurements import measure_case
from test_measure_geometry import GRIDS, in_plane_voxel

SHAPE = dict(levels=(20, 21, 22, 23, 24), depth=35.0, heights=26.0, discs=10.0, top_angle=5.0)
NODE = (6.0, 4.0, 4.0)
BROAD = (20.0, 14.0, 4.0)
CASES = ("sagittal-0.6x0.6x3.5mm", "oblique-25deg-0.9x1.1x1.3mm")


def _measure(pit, grid, tmp_path):
    spacing, direction = GRIDS[grid]
    label_map, image = ph.render_phantom(ph.build_spine(pits={22: pit}, **SHAPE), spacing, direction)
    sitk.WriteImage(label_map, str(tmp_path / "labels.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / "image.nii.gz"))
    rows = measure_case(sitk.ReadImage(str(tmp_path / "image.nii.gz")), sitk.ReadImage(str(tmp_path / "labels.nii.gz")))
    return {r.parameter: r for r in rows if r.level == "L3"}, in_plane_voxel(spacing, direction)


@pytest.mark.parametrize("grid", CASES)
def test_schmorl_node_is_not_graded(grid, tmp_path):
    row, tol = _measure(NODE, grid, tmp_path)
    assert row["genant_grade"].value == 0, row["genant_grade"].note
    for endplate in ("superior", "inferior"):
        assert f"possible Schmorl node in the {endplate} endplate" in row["genant_grade"].note
        assert f"focal {endplate} endplate notch" in row["height_middle_mm"].note
    assert "not graded as a fracture" in row["genant_grade"].note
    # bridged: the middle height is the body's, not the 26 - 8 = 18 mm straight across both pits
    assert row["height_middle_mm"].value == pytest.approx(26.0, abs=tol)


@pytest.mark.parametrize("grid", CASES)
def test_broad_depression_of_the_same_depth_is_graded(grid, tmp_path):
    row, tol = _measure(BROAD, grid, tmp_path)
    assert row["height_middle_mm"].value == pytest.approx(18.0, abs=tol)
    assert row["genant_grade"].value == 2, row["genant_grade"].note
    assert "biconcave" in row["genant_grade"].note
    assert "Schmorl" not in row["genant_grade"].note and "notch" not in row["height_middle_mm"].note


def test_a_posterior_height_the_neighbours_do_not_share_is_not_the_reference(tmp_path):
    # VB3_35 L4 (model mask): a posterior-inferior spur made the posterior height 29 mm between 24.5 and 19.7 mm
    # neighbours, so the normal middle height read "biconcave 25 %". Phantom: L3 26 mm anterior, 34 mm posterior
    # between 26 mm bodies (+31 %, healthy at most about +18 %): against its own posterior height a 0.76 wedge ratio
    # (31 % below L3's normal 1.11: grade 2); against the neighbours' posterior height (McCloskey's predicted
    # height) 1.0: no grade.
    spacing, direction = GRIDS["sagittal-0.6x0.6x3.5mm"]
    label_map, image = ph.render_phantom(ph.build_spine(heights={"default": 26.0, 22: (26.0, 34.0)}, **{k: v for k, v in SHAPE.items() if k != "heights"}),
                                         spacing, direction)
    row = {r.parameter: r for r in measure_case(image, label_map) if r.level == "L3"}
    assert row["wedge_ratio"].value == pytest.approx(26 / 34, abs=0.03)
    assert row["genant_grade"].value == 0, row["genant_grade"].note
    assert "above its neighbours' mean" in row["genant_grade"].note
