"""Scoring a model (``spineanalysis evaluate``): Dice, surface distance in mm, the VerSe identification
rule on phantoms whose answers are known, and one real validation case when ``../shared`` is there."""

import numpy as np
import pytest
import SimpleITK as sitk

from SpineAnalysisLib import evaluation
from SpineAnalysisLib.errors import InputError
from SpineAnalysisLib.model.dataset import default_data_dir, scored_prediction


def _grid(shape_zyx, spacing_xyz):
    image = sitk.Image(list(shape_zyx[::-1]), sitk.sitkUInt8)
    image.SetSpacing(spacing_xyz)
    return image


def _ball(image, centre_mm, radius_mm):
    z, y, x = np.indices(image.GetSize()[::-1], dtype=float)
    sx, sy, sz = image.GetSpacing()
    return (x * sx - centre_mm[0]) ** 2 + (y * sy - centre_mm[1]) ** 2 + (z * sz - centre_mm[2]) ** 2 <= radius_mm**2


def test_dice_of_known_overlaps():
    a = np.zeros((4, 4, 4), bool)
    a[:2] = True
    b = np.zeros_like(a)
    b[1:3] = True
    assert evaluation.dice(a, a) == 1.0
    assert evaluation.dice(a, b) == pytest.approx(0.5)
    assert evaluation.dice(a, np.zeros_like(a)) == 0.0
    assert evaluation.dice(np.zeros_like(a), np.zeros_like(a)) is None


@pytest.mark.parametrize("spacing", [(0.5, 0.5, 0.5), (0.5, 0.5, 2.0)])
def test_average_surface_distance_of_concentric_balls_is_the_radius_difference_in_mm(spacing):
    image = _grid((40, 120, 120) if spacing[2] == 0.5 else (20, 120, 120), spacing)
    centre = (30.0, 30.0, 10.0 if spacing[2] == 0.5 else 20.0)
    inner, outer = _ball(image, centre, 6.0), _ball(image, centre, 9.0)
    assert evaluation.average_surface_distance(inner, inner, image) == 0.0
    assert evaluation.average_surface_distance(inner, outer, image) == pytest.approx(3.0, abs=0.5)
    assert evaluation.average_surface_distance(inner, np.zeros_like(inner), image) is None


def _stack(levels, spacing=(1.0, 1.0, 1.0), offset_mm=0.0):
    """Bodies of 20 mm with 10 mm gaps stacked along the image z axis (LPS superior = +z, top first)."""
    image = _grid((200, 40, 40), spacing)
    labels = np.zeros((200, 40, 40), np.uint8)
    for i, label in enumerate(levels):
        top = 200 - int((10 + i * 30 + offset_mm) / spacing[2])
        labels[top - int(20 / spacing[2]) : top, 10:30, 10:30] = label
    return labels, image


def test_unannotated_levels_are_unknown_unless_they_overlap_the_annotated_structures():
    """An L1-L5 case: a predicted S1 below L5 and a T12 above L1 are not errors; a body the model
    called S1 where the expert outlined L5 still counts for the class; a false L3 anywhere counts."""
    predicted, _ = _stack([19, 20, 21, 22, 23, 24, 26], spacing=(1.0, 1.0, 2.0))  # T12 above, S1 below
    annotated = [20, 21, 22, 23, 24]
    reference = np.where(np.isin(predicted, annotated), predicted, 0)
    truth = reference > 0
    assert evaluation.dice(scored_prediction(predicted, evaluation.VERTEBRA_LABELS, annotated, truth), truth) == 1.0
    assert evaluation.dice(np.isin(predicted, evaluation.VERTEBRA_LABELS), truth) < 0.9  # what counting them would give (5 of 7 bodies)
    wrong_name = np.where(reference == 24, 26, predicted)  # L5 named S1: still body voxels of the class
    assert evaluation.dice(scored_prediction(wrong_name, evaluation.VERTEBRA_LABELS, annotated, truth), truth) == 1.0
    false_body = predicted.copy()
    false_body[0:10, 0:5, 0:5] = 22  # an annotated level where there is none
    scored = scored_prediction(false_body, evaluation.VERTEBRA_LABELS, annotated, truth)
    assert scored[0:10, 0:5, 0:5].all() and evaluation.dice(scored, truth) < 1.0
    assert not scored_prediction(np.zeros_like(reference), evaluation.VERTEBRA_LABELS, annotated, truth).any()


def test_identification_follows_the_verse_rule():
    reference, image = _stack([20, 21, 22, 23])
    assert evaluation.identification(reference, reference, image, [20, 21, 22, 23]) == (4, 4, [])
    swapped, _ = _stack([20, 22, 21, 23])
    found, total, errors = evaluation.identification(swapped, reference, image, [20, 21, 22, 23])
    assert (found, total) == (2, 4) and errors == ["L2: nearest is L3 at 0 mm", "L3: nearest is L2 at 0 mm"]
    far, _ = _stack([20], offset_mm=25.0)  # the right name 25 mm away: beyond the 20 mm radius
    assert evaluation.identification(far, reference, image, [20]) == (0, 1, ["L1: nearest is L1 at 25 mm"])
    near, _ = _stack([20], offset_mm=15.0)
    assert evaluation.identification(near, reference, image, [20])[0] == 1
    found, _, errors = evaluation.identification(np.zeros_like(reference), reference, image, [20])
    assert found == 0 and errors == ["L1: not found"]


def test_agreement_counts_the_values_the_prediction_leaves_empty():
    """A value withheld on the prediction (e.g. a disc beside a body labelled in part) leaves the mean difference but
    must still show: as ``missing``, also where no value of that parameter was compared at all."""
    cases = [
        {"disc_agreement": {"segmental_angle_deg": [("L3-L4", 2.0, 3.0), ("L4-L5", 5.0, 1.0)]},
         "disc_missing": {"segmental_angle_deg": ["L5-S1"], "dhi": ["L5-S1"]}, "source": "VB3"},
        {"disc_agreement": {"segmental_angle_deg": [("L3-L4", 4.0, 4.0)]}, "disc_missing": {}, "source": "VB3"},
    ]
    agreement = evaluation._agreement(cases)
    assert agreement["segmental_angle_deg"]["n"] == 3 and agreement["segmental_angle_deg"]["missing"] == 1
    assert agreement["segmental_angle_deg"]["mean_abs_difference"] == pytest.approx(5 / 3)
    assert agreement["dhi"] == {"n": 0, "mean_abs_difference": None, "bias": None, "correlation": None, "missing": 1}
    report = {"summary": {"cases": 2, "disc_cases": [], "dice_vertebra": None, "asd_vertebra_mm": None, "dice_disc": None, "asd_disc_mm": None,
                          "level_identification_rate": None, "identified": 0, "identifiable": 0, "dice_per_level": {},
                          "disc_agreement": agreement, "vertebra_agreement": {}, "mean_seconds_per_case": None,
                          "agreement_by_source": {"VB3": {"cases": 2, "dice_vertebra": None, "vertebra": {}, "disc": agreement}}},
              "cases": []}
    text = evaluation.format_report(report)
    assert "segmental_angle_deg agreement (prediction vs reference masks): n=3" in text and "empty on the prediction: 1" in text
    assert "dhi agreement (prediction vs reference masks): n=0, mean |diff| n/a" in text


SHARED = default_data_dir()


@pytest.mark.skipif(not (SHARED / "manifest.csv").is_file(), reason="../shared/data/lumbar_mri is not available")
def test_evaluate_scores_a_real_body_case_and_a_real_disc_case():
    report = evaluation.evaluate_model(cases="VB3_02,IVD_11", device="cpu")
    summary = report["summary"]
    assert summary["cases"] == 2 and summary["disc_cases"] == ["IVD_11"]
    assert 0.8 < summary["dice_vertebra"] <= 1 and 0.7 < summary["dice_disc"] <= 1
    assert summary["level_identification_rate"] >= 0.9 and summary["identifiable"] == 10  # L1-L5 bodies, 5 discs
    assert 0 < summary["asd_vertebra_mm"] < 3 and 0 < summary["asd_disc_mm"] < 3
    assert set(summary["disc_agreement_by_reference"]) == {"expert disc labels", "gap pseudo-labels between expert bodies"}
    text = evaluation.format_report(report)
    assert "vertebral-body class Dice" in text and "prediction vs expert disc labels" in text
    for parameter in ("height_middle_mm", "segmental_angle_deg"):
        stats = summary["disc_agreement"][parameter]
        # VB3_02's discs only: IVD_11 outlines no bodies
        assert 4 <= stats["n"] <= 6 and stats["mean_abs_difference"] < {"height_middle_mm": 3.0, "segmental_angle_deg": 6.0}[parameter], (parameter, stats)
    assert summary["vertebra_agreement"]["height_anterior_mm"]["n"] == 5  # VB3_02's five expert bodies
    assert summary["vertebra_agreement"]["height_anterior_mm"]["missing"] == 0
    assert "segmental_angle_deg agreement" in text and "height_middle_mm agreement (prediction vs expert bodies)" in text


def test_thick_slice_copy_averages_sagittal_slabs_and_keeps_the_geometry():
    """12 sagittal slices of 1 mm (sitk x = left-right here) become 3 slabs of 4 mm: each the mean of its
    4 slices, centred on them; labels from the slab centre; in-plane grid unchanged."""
    array = np.zeros((10, 8, 12), np.float32)  # numpy (z, y, x)
    array[:] = np.arange(12, dtype=np.float32)[None, None, :]
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 0.8, 0.8))
    image.SetDirection((1, 0, 0, 0, 0, 1, 0, -1, 0))  # x: left-right, y: S->I, z: A->P
    labels = sitk.GetImageFromArray((array >= 7).astype(np.uint8) * 20)
    labels.CopyInformation(image)
    thick, thick_labels = evaluation.thick_slice_copy(image, labels, 4.0)
    assert thick.GetSize() == (3, 8, 10) and thick.GetSpacing() == pytest.approx((4.0, 0.8, 0.8))
    assert sitk.GetArrayFromImage(thick)[0, 0].tolist() == pytest.approx([1.5, 5.5, 9.5])
    centre = np.array(thick.TransformIndexToPhysicalPoint((0, 0, 0)))
    assert centre == pytest.approx(np.array(image.TransformContinuousIndexToPhysicalPoint((1.5, 0, 0))))
    assert sitk.GetArrayFromImage(thick_labels)[0, 0].tolist() == [0, 0, 20]
    assert thick_labels.GetSize() == thick.GetSize()
    with pytest.raises(InputError, match="too few"):
        evaluation.thick_slice_copy(image, labels, 8.0)
    with pytest.raises(InputError, match="> 0 mm"):
        evaluation.thick_slice_copy(image, labels, 0)
