"""Real inference with the shipped weights on a small real input (a crop of the bundled sample)."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineAnalysisLib import labels as scheme
from SpineAnalysisLib.errors import InputError
from SpineAnalysisLib.inference import pick_device, segment_image
from SpineAnalysisLib.model.store import find_model

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_image.nii.gz"


@pytest.fixture(scope="module")
def small_real_image():
    image = sitk.ReadImage(str(SAMPLE))
    return image[:, :, 20:44]  # 24 central sagittal slices, geometry kept


@pytest.fixture(scope="module")
def result(small_real_image):
    return segment_image(small_real_image, device="cpu")


def _si_centroids(label_map):
    array = sitk.GetArrayFromImage(label_map)
    centres = {}
    for label in np.unique(array):
        if label:
            index = np.argwhere(array == label).mean(axis=0)[::-1]
            centres[int(label)] = label_map.TransformContinuousIndexToPhysicalPoint(index.tolist())[2]  # LPS z: superior
    return centres


def test_shipped_model_is_found_and_verified():
    info = find_model()
    assert info.manifest["sha256"] and info.weights_path.stat().st_size < 50 * 2**20


def test_label_map_is_on_the_input_grid(small_real_image, result):
    label_map = result.label_map
    assert label_map.GetSize() == small_real_image.GetSize()
    assert label_map.GetSpacing() == small_real_image.GetSpacing()
    assert label_map.GetOrigin() == small_real_image.GetOrigin()
    assert label_map.GetDirection() == small_real_image.GetDirection()


def test_the_same_scan_stored_in_another_voxel_order_gets_the_same_labels(small_real_image, result):
    """Clinical files store a sagittal scan with any axis order and direction: the image below is the sample with its
    index axes permuted and one of them reversed, the direction matrix and origin changed with them, so every voxel
    keeps its place in patient space. The labels, taken back onto the original grid, must be the same voxel for voxel
    (the network works in one canonical sagittal frame; a frame bug shows here as swapped or mirrored levels)."""
    reordered = sitk.PermuteAxes(sitk.Flip(small_real_image, [True, False, False], flipAboutOrigin=False), [1, 2, 0])
    assert reordered.GetSize() != small_real_image.GetSize()
    labels = segment_image(reordered, device="cpu").label_map
    back = sitk.Resample(labels, small_real_image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(result.label_map))


def test_lumbar_levels_are_found_in_anatomical_order(result):
    centres = _si_centroids(result.label_map)
    vertebrae = sorted((v for v in centres if scheme.is_vertebra(v)), key=scheme.anatomical_rank)
    assert {21, 22, 23, 24} <= set(vertebrae), result.report.levels  # the sample shows L1-L5 (expert labels)
    heights = [centres[v] for v in vertebrae]
    assert heights == sorted(heights, reverse=True)  # each level below the previous one


def test_discs_sit_between_their_vertebrae(result):
    centres = _si_centroids(result.label_map)
    discs = [d for d in centres if scheme.is_disc(d)]
    assert len(discs) >= 3
    for disc in discs:
        above = scheme.vertebra_above_disc(disc)
        below = scheme.next_vertebra(above)
        if above in centres:
            assert centres[disc] < centres[above]
        if below in centres:
            assert centres[disc] > centres[below]


def test_vertebrae_match_the_expert_labels_of_the_sample(small_real_image, result):
    reference = sitk.ReadImage(str(SAMPLE).replace("_image", "_labels"))[:, :, 20:44]
    truth = sitk.GetArrayFromImage(reference)
    predicted = sitk.GetArrayFromImage(result.label_map)
    for level in (21, 22, 23, 24):
        a, b = truth == level, predicted == level
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.7, scheme.structure_name(level)


def test_a_volume_with_one_body_blanked_out_is_levels_uncertain(small_real_image):
    """L3 replaced by the surrounding soft tissue's intensity: the network paints a body there anyway
    (its shape prior); the image check must say "levels uncertain", not name the chain with confidence."""
    from SpineAnalysisLib.model.labelling import LOW_CONFIDENCE

    labels = sitk.ReadImage(str(SAMPLE).replace("_image", "_labels"))[:, :, 20:44]
    l3 = sitk.BinaryDilate(sitk.Cast(labels == 22, sitk.sitkUInt8), [3, 3, 3])
    around = sitk.GetArrayFromImage(sitk.BinaryDilate(l3, [4, 4, 4]) - l3).astype(bool) & (sitk.GetArrayFromImage(labels) == 0)
    array = sitk.GetArrayFromImage(small_real_image).astype(np.float32)
    array[sitk.GetArrayFromImage(l3).astype(bool)] = np.median(array[around])
    blanked = segment_image(_like(small_real_image, array), device="cpu")
    assert blanked.report.levels_uncertain and blanked.report.confidence < LOW_CONFIDENCE, blanked.report.flags
    assert any(f.startswith("levels uncertain:") for f in blanked.report.flags)
    # the repair cannot bring back a body the image does not show: tried, and the levels stay uncertain
    repair = blanked.summary()["repair"]
    assert repair["tried"] and repair["second_pass"]["levels_uncertain"] and repair["kept"] == "first", repair


def test_a_body_reaching_the_top_edge_is_labelled_up_to_it(result):
    """T12 of the sample reaches the top of the image: its mask must reach the edge too (the network
    alone left 12 mm unlabelled there; mirrored input at the top edge)."""
    from SpineAnalysisLib.model.preprocessing import sagittal_frame

    frame = sagittal_frame(result.label_map)
    rows = np.argwhere(frame.to_canonical(sitk.GetArrayFromImage(result.label_map)) == 19)[:, 1]
    assert rows.size and rows.min() * frame.spacing[1] <= 4.0
    assert set(result.stages) >= {"prepare_s", "localise_s", "segment_s", "label_s", "box_fraction"}


def test_a_clean_scan_is_not_segmented_twice(result):
    assert result.report.repair is None and result.summary()["repair"] is None and result.first_pass is None
    assert result.noise["snr"] > 15 and result.summary()["noise"] == result.noise
    assert not any(k.startswith("repair_") for k in result.stages)


def test_fast_gives_the_default_answer_with_a_deprecation_warning(small_real_image, result):
    """--fast must not change a clinical answer (issue 25 item 7): it now runs the default settings."""
    from SpineAnalysisLib.inference import FAST_DEPRECATED

    fast = segment_image(small_real_image, device="cpu", fast=True)
    assert FAST_DEPRECATED in fast.warnings and FAST_DEPRECATED not in result.warnings
    assert fast.report.levels == result.report.levels and fast.report.anchor == result.report.anchor
    assert (sitk.GetArrayFromImage(fast.label_map) == sitk.GetArrayFromImage(result.label_map)).all()


def test_the_models_label_map_with_a_body_removed_is_levels_uncertain(result):
    """The labelling step fed the network's own output on the real sample, L3 removed: the chain check
    must say "levels uncertain" (and lower the confidence) rather than name the rest with confidence."""
    from SpineAnalysisLib.model.labelling import LOW_CONFIDENCE, label_levels

    labels, classes, spacing = _network_classes(result)
    _, intact = label_levels(classes, spacing)
    assert not intact.levels_uncertain and not result.report.levels_uncertain, intact.flags
    classes[labels == 22] = 0
    _, report = label_levels(classes, spacing)
    assert report.levels_uncertain and report.confidence < LOW_CONFIDENCE
    assert any(f.startswith("levels uncertain: a body seems missing between L2 and L4") for f in report.flags), report.flags


def test_the_models_label_map_without_its_lowest_bodies_is_levels_uncertain(result):
    """The held-out failure ("L4 and L5 missed, levels counted from the wrong anchor"): the network's own
    output on the real sample with L4, L5 and S1 (and the discs below L3) removed is a regular chain,
    but the image continues far below its lowest body and shows no sacrum: levels uncertain."""
    from SpineAnalysisLib.model.labelling import LOW_CONFIDENCE, label_levels

    labels, classes, spacing = _network_classes(result)
    assert "S1" in result.report.levels and not any("no sacrum found" in f for f in result.report.flags)
    _, intact = label_levels(classes, spacing)
    assert intact.anchor == "S1" and not any("no sacrum found" in f for f in intact.flags), intact.flags
    classes[np.isin(labels, [23, 24, 26] + [scheme.disc_label(v) for v in (22, 23, 24)])] = 0  # L4, L5, S1, discs L3-L4 to L5-S1
    _, report = label_levels(classes, spacing)
    assert [n for n in report.levels if "-" not in n][-1] == "L3"
    assert report.levels_uncertain and report.confidence < LOW_CONFIDENCE
    assert any(f.startswith("levels uncertain: no sacrum found although the image continues") and "below L3" in f for f in report.flags), report.flags


def test_the_models_label_map_without_its_highest_bodies_is_levels_uncertain(result):
    """Under noise the stress test lost T11 and T12 at the top of otherwise right chains: the network's
    own output on the real sample with T12 and L1 (and the discs between them and below) removed starts
    at L2, and the image continues more than 1.5 body spacings above it: levels uncertain. Without T12
    alone (the network's T12 reaches the top edge) the image still continues 1.3 spacings above L1: most of T12 is in
    view and missed, like the T10s the stress test lost at the top edge, so that is levels uncertain too (since the
    limit is 1.0 spacing; at 1.5 it passed)."""
    from SpineAnalysisLib.model.labelling import LOW_CONFIDENCE, label_levels

    labels, classes, spacing = _network_classes(result)
    assert result.report.levels[0] == "T12" and not any("upper end" in f for f in result.report.flags)
    without_t12 = classes.copy()
    without_t12[np.isin(labels, [19, scheme.disc_label(19)])] = 0
    _, report = label_levels(without_t12, spacing)
    assert report.levels[0] == "L1" and report.levels_uncertain
    assert any(f.startswith("levels uncertain: no body labelled above L1 although the image continues") for f in report.flags), report.flags
    classes[np.isin(labels, [19, 20] + [scheme.disc_label(v) for v in (19, 20)])] = 0  # T12, L1, discs T12-L1 and L1-L2
    _, report = label_levels(classes, spacing)
    assert report.levels[0] == "L2" and report.anchor == "S1"
    assert report.levels_uncertain and report.confidence < LOW_CONFIDENCE
    assert any(f.startswith("levels uncertain: no body labelled above L2 although the image continues") for f in report.flags), report.flags


def _network_classes(result):
    """(scheme labels, network class map, spacing) of a result's label map in the network frame."""
    from SpineAnalysisLib.model.classes import LABEL_TO_CHANNEL
    from SpineAnalysisLib.model.preprocessing import sagittal_frame

    frame = sagittal_frame(result.label_map)
    labels = frame.to_canonical(sitk.GetArrayFromImage(result.label_map))
    classes = np.zeros(labels.shape, np.uint8)
    for label, channel in LABEL_TO_CHANNEL.items():
        if label:
            classes[labels == label] = channel
    return labels, classes, frame.spacing


def _like(image, array):
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def test_uniform_volume_has_no_vertebrae(small_real_image):
    result = segment_image(_like(small_real_image, np.full(small_real_image.GetSize()[::-1], 100, np.uint8)), device="cpu")
    assert "no vertebrae found" in result.report.flags
    assert not sitk.GetArrayFromImage(result.label_map).any()


def test_random_noise_has_no_vertebrae(small_real_image):
    noise = np.random.default_rng(1).integers(0, 255, small_real_image.GetSize()[::-1]).astype(np.uint8)
    result = segment_image(_like(small_real_image, noise), device="cpu")
    assert result.report.levels == [] or len([l for l in result.report.levels if "-" not in l]) == 0


def test_ct_volume_is_refused(small_real_image):
    hounsfield = np.full(small_real_image.GetSize()[::-1], -1000, np.int16)
    hounsfield[:, 40:120, 60:100] = 300
    with pytest.raises(InputError, match="CT volume"):
        segment_image(_like(small_real_image, hounsfield), device="cpu")


def test_non_finite_voxels_are_handled(small_real_image):
    array = sitk.GetArrayFromImage(small_real_image).astype(np.float32)
    array[0, :10, :10] = np.nan
    array[1, :10, :10] = np.inf
    result = segment_image(_like(small_real_image, array), device="cpu")
    assert any("NaN" in w for w in result.warnings)
    assert len(result.report.levels) >= 5


def test_2d_image_is_refused():
    with pytest.raises(InputError, match="3D"):
        segment_image(sitk.Image(64, 64, sitk.sitkUInt8), device="cpu")


def test_cancel_stops_inference(small_real_image):
    with pytest.raises(InterruptedError):
        segment_image(small_real_image, device="cpu", cancel=lambda: True)


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(InputError):
        pick_device("tpu")


def test_when_the_coarse_pass_finds_no_spine_the_whole_volume_is_searched_at_one_zoom(small_real_image, result, monkeypatch):
    """A scan the coarse pass cannot read (a noisy Siegen scan gave 76 s for three zooms over the whole volume):
    the full pass covers the whole volume at one zoom, so the time stays bounded; a readable scan keeps three."""
    from SpineAnalysisLib import inference

    assert result.stages["zooms"] == 3 and result.stages["box_fraction"] < 1.0
    real_coarse, real_predict = inference.coarse_structures, inference.predict_volume
    scales = []

    def nothing_found(*args, **kwargs):
        return np.zeros_like(real_coarse(*args, **kwargs))

    def recording(*args, **kwargs):
        scales.append(tuple(kwargs["test_time_scales"]))
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(inference, "coarse_structures", nothing_found)
    monkeypatch.setattr(inference, "predict_volume", recording)
    searched = segment_image(small_real_image, device="cpu", repair=False)
    assert scales == [(1.0,)]
    assert searched.stages["zooms"] == 1 and searched.stages["box_fraction"] == 1.0
    assert {"L2", "L3", "L4"} <= set(searched.report.levels)  # one zoom still finds the spine of a readable scan
    assert inference.WHOLE_VOLUME_SEARCH in searched.report.flags and inference.WHOLE_VOLUME_SEARCH not in result.report.flags
