"""Chain-end vertebrae labelled only in part ("incomplete") and the Genant level range, on rendered phantoms."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import phantoms as ph
from SpineAnalysisLib import quality
from SpineAnalysisLib.measurements import measure_case


def rows_by(rows):
    return {(r.level, r.parameter): r for r in rows}


def _remove_top(label_map: sitk.Image, label: int, above_s: float) -> sitk.Image:
    """``label`` set to 0 above the patient-superior coordinate ``above_s`` (LPS z), as a network that labelled
    only the lower part of a body would leave it."""
    array = sitk.GetArrayFromImage(label_map)
    z = np.array([label_map.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(array.shape[0])])
    array[(z[:, None, None] > above_s) & (array == label)] = 0
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(label_map)
    return result


@pytest.fixture(scope="module")
def lumbar():
    spine = ph.build_spine((20, 21, 22, 23, 24), heights=26.0, discs=10.0, top=(0.0, 60.0))
    return ph.render_phantom(spine, (1.0, 1.0, 1.0), ph.LPS_DIRECTION, margin=6.0)


@pytest.mark.parametrize("with_image", [True, False])
def test_a_chain_end_vertebra_cut_short_is_incomplete_and_ungraded(lumbar, with_image):
    label_map, image = lumbar
    short = _remove_top(label_map, 20, 60.0 - 0.4 * 26.0)  # L1 loses its top 40 %; the image still shows it
    rows = measure_case(image if with_image else None, short)
    table = rows_by(rows)
    for name in ("wedge_ratio", "biconcavity_ratio", "genant_grade", "ap_depth_mm", "volume_mm3"):
        row = table[("L1", name)]
        assert row.value is None and "incomplete chain-end vertebra" in row.note, name
    height = table[("L1", "height_anterior_mm")]
    assert height.value == pytest.approx(0.6 * 26.0, abs=1.0) and "incomplete" in height.note  # shown, with the note
    assert "image" in height.note if with_image else "% of L2's height" in height.note
    lordosis = table[("L1-L5", "lumbar_lordosis_deg")]
    assert lordosis.value is None and "free end" in lordosis.note  # its top is not an endplate
    assert table[("L1", "slip_percent")].value == pytest.approx(0.0, abs=100 * 2 / 36)  # its inferior endplate is
    assert table[("L2", "genant_grade")].value == 0
    assert quality.assess(rows).status == "ok"


def test_a_whole_chain_end_vertebra_near_the_edge_is_complete_and_a_real_fracture_is_graded():
    spine = ph.build_spine((20, 21, 22, 23, 24), heights={"default": 26.0, 20: (13.0, 26.0)}, discs=10.0)
    label_map, image = ph.render_phantom(spine, (1.0, 1.0, 1.0), ph.LPS_DIRECTION, margin=6.0)
    table = rows_by(measure_case(image, label_map))
    assert table[("L1", "genant_grade")].value == 3  # 50 % anterior wedge: a fracture, not a labelling gap
    assert "incomplete" not in table[("L1", "height_anterior_mm")].note


def test_s1_never_gets_a_genant_grade():
    spine = ph.build_spine((23, 24, 26), heights={"default": 26.0, 26: (12.0, 24.0)}, discs=10.0, csf=False)
    label_map, _ = ph.render_phantom(spine, (1.0, 1.0, 1.0), ph.LPS_DIRECTION)
    table = rows_by(measure_case(None, label_map))
    assert table[("S1", "wedge_ratio")].value == pytest.approx(0.5, abs=0.06)
    row = table[("S1", "genant_grade")]
    assert row.value is None and "T4-L5 only" in row.note
    assert table[("L5", "genant_grade")].value == 0


def test_an_implausible_sliver_at_the_chain_end_is_withheld_without_failing_the_case(lumbar):
    label_map, image = lumbar
    # 3 mm of L1 left, its top 18 mm below the image top
    sliver = ph.crop(_remove_top(label_map, 20, 34.0 + 2.5), upper=(0, 0, 12))
    rows = measure_case(ph.crop(image, upper=(0, 0, 12)), sliver)
    row = rows_by(rows)[("L1", "height_posterior_mm")]
    assert row.value is None and row.note.startswith(quality.WITHHELD) and row.note.endswith(quality.AT_EDGE)
    result = quality.assess(rows)
    assert result.status == "ok" and any("L1 height_posterior_mm" in note for note in result.notes)


def test_spine_rows_named_like_a_chain_end_still_fail():
    from SpineAnalysisLib.measurements import Measurement

    rows = [Measurement("vertebra", "S1", "height_anterior_mm", 3.0, "mm", "", 26), Measurement("spine", "S1", "sacral_slope_deg", -12.0, "deg", "", None)]
    gated = quality.withhold_implausible(rows, at_edge={"S1"})
    assert all(m.value is None for m in gated)
    result = quality.assess(gated)
    assert result.status == "failed" and result.reasons == ["S1 sacral_slope_deg -12 deg is outside its physical range (withheld)"]


def test_no_slip_on_a_lower_body_labelled_only_in_part():
    """Meyerding divides by the lower endplate: a lower body whose label lacks its anterior 40 % gives no slip."""
    spine = ph.build_spine((23, 24, 26), heights=26.0, discs=10.0, csf=False)
    label_map, _ = ph.render_phantom(spine, (1.0, 1.0, 1.0), ph.LPS_DIRECTION)
    array = sitk.GetArrayFromImage(label_map)
    y = np.array([label_map.TransformIndexToPhysicalPoint((0, j, 0))[1] for j in range(array.shape[1])])
    array[(array == 26) & (-y[None, :, None] > 0.6 * 36.0)] = 0  # anterior = -y (LPS); the posterior wall is at a = 0
    partial = sitk.GetImageFromArray(array)
    partial.CopyInformation(label_map)
    table = rows_by(measure_case(None, partial))
    row = table[("L5", "slip_percent")]
    assert row.value is None and "S1 superior endplate is 59 %" in row.note and "S1 labelled in part" in row.note
    assert table[("L4", "slip_percent")].value == pytest.approx(0.0, abs=3.0)


@pytest.mark.parametrize("kept, percent", [(0.6, 59), (0.7, 70)])
def test_a_body_labelled_only_in_part_gives_no_disc_corners_angle_or_sacral_slope(kept, percent):
    """Facing endplates of the shared expert masks are 0.805-1.24 of each other (slab-averaged corners; S1 under L5
    0.81-1.08); an S1 drawn with only its posterior 59 % or 70 % (the model's S1 at the bottom of a field of view; 70 %
    passed S1's limit before it rose from 0.6 to 0.8) must not give the L5-S1 heights, angle, DHI or sacral slope
    from its wrong anterior corner, and no outline fallback from a disc that is drawn in part with it."""
    spine = ph.build_spine((23, 24, 26), heights=26.0, discs=10.0, csf=False)
    label_map, _ = ph.render_phantom(spine, (1.0, 1.0, 1.0), ph.LPS_DIRECTION)
    whole = rows_by(measure_case(None, label_map))
    array = sitk.GetArrayFromImage(label_map)
    y = np.array([label_map.TransformIndexToPhysicalPoint((0, j, 0))[1] for j in range(array.shape[1])])
    array[(array == 26) & (-y[None, :, None] > kept * 36.0)] = 0
    partial = sitk.GetImageFromArray(array)
    partial.CopyInformation(label_map)
    measured = measure_case(None, partial)
    table = rows_by(measured)
    assert f"S1 superior endplate is {percent} % as long as L5's facing one" in table[("L5-S1", "segmental_angle_deg")].note
    for key in (("L5-S1", "height_anterior_mm"), ("L5-S1", "height_posterior_mm"), ("L5-S1", "segmental_angle_deg"),
                ("L5-S1", "dhi"), ("S1", "sacral_slope_deg")):
        assert whole[key].value is not None, key
        assert table[key].value is None and "S1 labelled in part" in table[key].note, (key, table[key].note)
    # the disc above keeps its values
    assert table[("L4-L5", "height_middle_mm")].value == pytest.approx(whole[("L4-L5", "height_middle_mm")].value, abs=0.01)
    # S1 itself: heights shown with the note, its shape values empty; S1 is never graded, so no review for it
    assert table[("S1", "height_anterior_mm")].value is not None and "S1 labelled in part" in table[("S1", "height_anterior_mm")].note
    for parameter in ("wedge_ratio", "ap_depth_mm", "volume_mm3"):
        assert whole[("S1", parameter)].value is not None and table[("S1", parameter)].value is None, parameter
    assert quality.assess(measured).status == "ok", quality.assess(measured)


def _without_front_top(label_map: sitk.Image, label: int, depth_fraction: float, height_fraction: float) -> sitk.Image:
    """``label`` with the front ``depth_fraction`` of its upper ``height_fraction`` removed (patient axes)."""
    array = sitk.GetArrayFromImage(label_map)
    index = np.argwhere(array == label)  # (k, j, i)
    points = np.array([label_map.TransformIndexToPhysicalPoint([int(i), int(j), int(k)]) for k, j, i in index])
    anterior, superior = -points[:, 1], points[:, 2]  # LPS: anterior = -y, superior = +z
    front = anterior > anterior.max() - depth_fraction * (anterior.max() - anterior.min())
    top = superior > superior.max() - height_fraction * (superior.max() - superior.min())
    bite = index[front & top]
    array[bite[:, 0], bite[:, 1], bite[:, 2]] = 0
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(label_map)
    return result


def test_an_inner_body_with_a_shortened_endplate_is_not_graded_and_goes_to_review(lumbar):
    """A fracture lowers a body's heights, not its endplates' AP length (the expert masks' facing endplates are
    0.805-1.24 of each other, slab-averaged). L3 without the front 35 % of its upper 80 % (a mask that lost its front, as the model
    drew VB3_39's L5) has a superior endplate under 70 % of L2's facing one: no Genant grade, the case goes to
    review, and the values that need that endplate or the body's whole outline are left empty. A loss of the front-top corner that leaves a full-length oblique endplate (a wedge fracture's shape) is
    still graded: the rule looks at endplate length, not at height."""
    label_map, _ = lumbar
    assert rows_by(measure_case(None, label_map))[("L3", "genant_grade")].value == 0
    measured = measure_case(None, _without_front_top(label_map, 22, 0.35, 0.8))
    row = rows_by(measured)[("L3", "genant_grade")]
    assert row.value is None and row.note.startswith("not graded, labelled in part: its superior endplate is") and "L3 labelled in part" in row.note, row.note
    status = quality.assess(measured)
    assert status.status == "review" and any(reason.startswith("L3 seems labelled in part") for reason in status.reasons), status
    # like a chain end labelled in part: heights with the note, no shape ratios, depth or volume; the disc beside the
    # short endplate gets no heights or angle, the disc below keeps its angle and middle height from the whole inferior
    # endplate (its anterior corner moves by 0.8 mm here: the anterior wall is fitted on the part that is left) but no
    # DHI (the body's height is not known)
    table, whole = rows_by(measured), rows_by(measure_case(None, label_map))
    for parameter in ("height_anterior_mm", "height_posterior_mm"):
        assert table[("L3", parameter)].value is not None and "L3 labelled in part" in table[("L3", parameter)].note
    for parameter in ("wedge_ratio", "biconcavity_ratio", "ap_depth_mm", "volume_mm3"):
        assert table[("L3", parameter)].value is None and "L3 labelled in part" in table[("L3", parameter)].note, parameter
    for parameter in ("height_anterior_mm", "height_middle_mm", "segmental_angle_deg"):
        assert whole[("L2-L3", parameter)].value is not None
        assert table[("L2-L3", parameter)].value is None and "L3 labelled in part" in table[("L2-L3", parameter)].note, parameter
    assert table[("L3-L4", "segmental_angle_deg")].value == pytest.approx(whole[("L3-L4", "segmental_angle_deg")].value, abs=0.5)
    assert table[("L3-L4", "height_middle_mm")].value == pytest.approx(whole[("L3-L4", "height_middle_mm")].value, abs=0.3)
    for disc in ("L2-L3", "L3-L4"):
        assert whole[(disc, "dhi")].value is not None and table[(disc, "dhi")].value is None and "L3" in table[(disc, "dhi")].note
    wedge = rows_by(measure_case(None, _without_front_top(label_map, 22, 0.4, 0.5)))
    assert wedge[("L3", "wedge_ratio")].value < 0.5 and wedge[("L3", "genant_grade")].value == 3, wedge[("L3", "genant_grade")].note


def test_the_genant_reference_takes_posterior_heights_only_from_bodies_measured_whole(lumbar):
    """build_genant_reference's posterior-to-neighbours ratio leaves out the heights of an incomplete chain end (L1
    cut short at the top) and of an inner body labelled in part (L3 without its front top), as it leaves out their
    shape ratios; L2 and L4 then lose their ratio too (it needs both neighbours' heights)."""
    from SpineAnalysisLib.measure.build_genant_reference import POSTERIOR, body_values, measured_whole

    label_map, image = lumbar
    whole = body_values(measure_case(image, label_map))
    assert {level for level, values in whole.items() if POSTERIOR in values} == {"L2", "L3", "L4"}
    damaged = _without_front_top(_remove_top(label_map, 20, 60.0 - 0.4 * 26.0), 22, 0.35, 0.8)
    rows = measure_case(image, damaged)
    table = rows_by(rows)
    assert "incomplete" in table[("L1", "height_posterior_mm")].note and "labelled in part" in table[("L3", "height_posterior_mm")].note
    assert table[("L1", "height_posterior_mm")].value is not None and table[("L3", "height_posterior_mm")].value is not None
    assert measured_whole(rows) == {21, 23, 24}
    values = body_values(rows)
    assert not any(POSTERIOR in v for v in values.values())  # L2 and L4 each lost a neighbour; L1, L3 are not whole
    assert set(values) == {"L2", "L4", "L5"} and all(set(values[level]) == {"wedge_ratio", "biconcavity_ratio"} for level in values)
