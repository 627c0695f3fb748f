"""McCloskey's two criteria for a Genant grade (``vertebra.deformity_loss``), on rendered phantoms."""

from __future__ import annotations

import pytest

import phantoms as ph
from SpineAnalysisLib.measure.vertebra import genant_grade, normal_ratio, ratio_loss
from SpineAnalysisLib.measurements import measure_case


def _rows(l3_heights):
    spine = ph.build_spine((20, 21, 22, 23, 24), heights={"default": 26.0, 22: l3_heights}, discs=10.0)
    label_map, image = ph.render_phantom(spine, (1.0, 1.0, 1.0), ph.LPS_DIRECTION, margin=6.0)
    return {(r.level, r.parameter): r for r in measure_case(image, label_map)}


def test_a_tall_posterior_wall_is_not_a_wedge_fracture():
    """L3 with its anterior height like its neighbours' and a posterior wall 4 mm taller (15 %, under the +18 % that
    replaces it as the reference): its wedge ratio is more than 3 SD below L3's normal, but its anterior height over
    the neighbours' posterior height is within that ratio's normal range, so no deformity."""
    rows = _rows((25.0, 30.0))
    wedge = rows[("L3", "wedge_ratio")].value
    assert genant_grade(ratio_loss(wedge, normal_ratio("L3", "wedge_ratio"))) >= 1  # the first criterion alone grades it
    grade = rows[("L3", "genant_grade")]
    assert grade.value == 0
    assert "McCloskey's second criterion" in grade.note


@pytest.mark.parametrize("anterior, expected", [(19.0, 2), (15.0, 3)])
def test_a_wedge_fracture_meets_both_criteria(anterior, expected):
    rows = _rows((anterior, 26.0))
    grade = rows[("L3", "genant_grade")]
    assert grade.value == expected, grade.note
    assert "McCloskey" not in grade.note


def test_a_reference_override_grades_against_its_normals_and_ends_with_the_block():
    """How build_genant_reference grades each volunteer against normals built without it."""
    from SpineAnalysisLib.measure import vertebra

    shipped = normal_ratio("L3", "wedge_ratio")
    strict = {"levels": {"L3": {"wedge_ratio": {"n": 50, "volunteers": 50, "mean": 1.6, "sd": 0.01}}}}
    with vertebra.reference_override(strict):
        assert normal_ratio("L3", "wedge_ratio")["mean"] == 1.6
        assert normal_ratio("L3", "anterior_to_predicted_posterior") is None  # first criterion alone
        graded = _rows((25.0, 26.0))[("L3", "genant_grade")]
        assert graded.value >= 2, graded.note  # a rectangular body is a deformity against a 1.6 normal
    assert normal_ratio("L3", "wedge_ratio") == shipped
    assert _rows((25.0, 26.0))[("L3", "genant_grade")].value == 0
