"""Network frame, partial-label losses, level labelling and safe model loading (no trained weights needed)."""

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SpineAnalysisLib import labels as scheme
from SpineAnalysisLib.errors import ModelError
from SpineAnalysisLib.model import store
from SpineAnalysisLib.model.classes import CHANNEL_LABELS, LABEL_TO_CHANNEL, NUM_CHANNELS
from SpineAnalysisLib.model.dataset import (
    KNOWN_LABEL_ERRORS, NOT_BODY, UNKNOWN, add_pseudo_discs, channel_targets, mark_uncertain_disc_borders, mark_unknown_outlines,
    training_labels,
)
from SpineAnalysisLib.model.labelling import label_levels
from SpineAnalysisLib.model.losses import class_dice_loss, marginal_cross_entropy, partial_dice_loss, partial_label_loss
from SpineAnalysisLib.model.network import NetworkConfig, build_network
from SpineAnalysisLib.model.preprocessing import normalise_intensity, sagittal_frame


def _image_with_direction(direction, size=(6, 7, 8)):
    image = sitk.Image(size, sitk.sitkFloat32)
    image.SetDirection(direction)
    return image


@pytest.mark.parametrize(
    "direction",
    [
        (0, 0, -1, 0, 1, 0, -1, 0, 0),  # the shared data: I, P, R
        (1, 0, 0, 0, 1, 0, 0, 0, 1),  # axial LPS
        (0, 0, 1, 1, 0, 0, 0, -1, 0),  # sagittal stack, index axes P?, S, L permuted
        (-1, 0, 0, 0, -1, 0, 0, 0, 1),  # RAS-like file
    ],
)
def test_sagittal_frame_puts_superior_top_and_anterior_left(direction):
    image = _image_with_direction(direction)
    array = np.zeros(image.GetSize()[::-1], np.float32)
    # mark the voxel that is most superior, most anterior and most right
    lps = np.array([[image.TransformIndexToPhysicalPoint((int(i), int(j), int(k))) for i, j, k in [idx]] for idx in np.ndindex(*image.GetSize())])[:, 0]
    score = lps[:, 2] - lps[:, 1] - lps[:, 0] * 1e-3  # superior, anterior (LPS y small), right (x small)
    target = list(np.ndindex(*image.GetSize()))[int(np.argmax(score))]
    array[target[::-1]] = 1
    frame = sagittal_frame(image)
    canonical = frame.to_canonical(array)
    position = np.argwhere(canonical == 1)[0]
    assert position[1] == 0 and position[2] == 0  # top row, left column
    np.testing.assert_array_equal(frame.from_canonical(canonical), array)


def test_oblique_frame_reports_its_angle():
    angle = np.radians(20)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    frame = sagittal_frame(_image_with_direction(tuple(direction.ravel())))
    assert frame.obliqueness_deg == pytest.approx(20, abs=0.01)


def test_normalise_intensity_handles_constant_and_non_finite_volumes():
    assert normalise_intensity(np.full((4, 4, 4), 7.0)).max() == 0
    volume = np.linspace(0, 100, 64).reshape(4, 4, 4)
    volume[0, 0, 0] = np.nan
    result = normalise_intensity(volume)
    assert np.isfinite(result).all() and result.min() == 0 and result.max() == 1


def test_marginal_loss_equals_cross_entropy_when_everything_is_annotated():
    torch.manual_seed(0)
    logits = torch.randn(2, NUM_CHANNELS, 5, 5)
    target = torch.randint(0, NUM_CHANNELS, (2, 5, 5))
    annotated = torch.ones(2, NUM_CHANNELS, dtype=torch.bool)
    expected = torch.nn.functional.cross_entropy(logits, target)
    assert marginal_cross_entropy(logits, target, annotated).item() == pytest.approx(expected.item(), rel=1e-5)


def _body_and_disc_target(batch=2, size=16):
    target = torch.zeros(batch, size, size, dtype=torch.long)
    target[:, 4:10, 4:12] = LABEL_TO_CHANNEL[22]
    target[:, 10:13, 4:12] = LABEL_TO_CHANNEL[122]
    return target


def test_unknown_voxels_are_left_out_of_every_loss_term():
    torch.manual_seed(0)
    target = _body_and_disc_target()
    target[:, :3] = UNKNOWN  # the top rows: nothing known there
    target[:, 4, 4:12] = UNKNOWN  # and the body's upper outline row
    annotated = torch.ones(2, NUM_CHANNELS, dtype=torch.bool)
    logits = torch.randn(2, NUM_CHANNELS, 16, 16, requires_grad=True)
    loss = partial_label_loss(logits, target, annotated, class_dice_weight=1.0)
    loss.backward()
    unknown = (target == UNKNOWN)[:, None].expand_as(logits)
    assert logits.grad[unknown].abs().max() == 0 and logits.grad[~unknown].abs().max() > 0
    other = logits.detach().clone()
    other[unknown] = 50.0 * torch.randn(int(unknown.sum()))
    assert partial_label_loss(other, target, annotated, class_dice_weight=1.0).item() == pytest.approx(loss.item(), rel=1e-6)
    # the cross-entropy is the mean over the known voxels: the same as on the image without the unknown rows
    below = marginal_cross_entropy(logits[:, :, 5:], target[:, 5:], annotated).item()
    target[:, :5] = UNKNOWN
    assert marginal_cross_entropy(logits, target, annotated).item() == pytest.approx(below, rel=1e-6)


def test_unknown_outline_band_lies_around_each_body_in_its_own_slice():
    labels = np.zeros((3, 20, 20), np.int32)
    labels[1, 6:14, 5:15] = 22
    labels[1, 15:17, 5:15] = 122  # its disc, 1 row below the body, 2 rows thick
    mark_unknown_outlines(labels, [22], outside_px=2)
    band = labels == -2
    assert not band[0].any() and not band[2].any()  # neighbouring slices untouched
    assert band[1, 4:6, 3:17].all() and band[1, 6, 5:15].all() and band[1, 13, 5:15].all()  # 2 outside, 1 inside
    assert (labels[1, 7:13, 6:14] == 22).all() and not band[1, 3].any() and not band[1, :, 2].any()
    assert band[1, 14, 3:17].all() and (labels[1, 15:17, 5:15] == 122).all()  # a 2-row disc keeps its middle (upper) row
    labels = np.zeros((1, 20, 20), np.int32)
    labels[0, 2:8, 5:15], labels[0, 8:11, 5:15], labels[0, 11:17, 5:15] = 22, 122, 23  # a collapsed disc, 3 rows
    mark_unknown_outlines(labels, [22, 23], outside_px=2)
    assert (labels[0, 9, 5:15] == 122).all() and (labels[0, 8, 5:15] == -2).all() and (labels[0, 10, 5:15] == -2).all()


def test_marginal_loss_does_not_punish_unannotated_structures():
    logits = torch.full((1, NUM_CHANNELS, 1, 1), -10.0)
    disc = LABEL_TO_CHANNEL[123]
    logits[0, disc] = 10.0  # confident L4-L5 disc on a voxel labelled 0
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    annotated = torch.zeros(1, NUM_CHANNELS, dtype=torch.bool)
    annotated[0, 0] = True
    assert marginal_cross_entropy(logits, target, annotated).item() < 1e-3  # disc not annotated: no penalty
    annotated[0, disc] = True
    assert marginal_cross_entropy(logits, target, annotated).item() > 10  # annotated: background was right


def test_partial_dice_ignores_unannotated_channels():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2] = LABEL_TO_CHANNEL[22]
    logits = torch.full((1, NUM_CHANNELS, 4, 4), -20.0)
    logits[0, LABEL_TO_CHANNEL[22], :2] = 20
    logits[0, 0, 2:] = 20
    annotated = torch.zeros(1, NUM_CHANNELS, dtype=torch.bool)
    annotated[0, [0, LABEL_TO_CHANNEL[22]]] = True
    assert partial_dice_loss(logits, target, annotated).item() < 1e-3


def test_pseudo_discs_fill_the_gap_between_consecutive_bodies():
    labels = np.zeros((3, 40, 20), np.int32)  # slice, row (S->I), column (A->P)
    labels[:, 5:15, 4:16] = 22  # L3
    labels[:, 20:30, 6:18] = 23  # L4, shifted posteriorly
    added = add_pseudo_discs(labels, {22, 23}, max_gap_px=25)
    assert added == {122}
    disc = labels == 122
    assert disc[:, 15:20, 6:16].all()  # the gap over the columns both bodies cross
    assert disc.sum() == 3 * 5 * 10


def test_pseudo_discs_skip_non_consecutive_or_distant_bodies():
    labels = np.zeros((1, 80, 10), np.int32)
    labels[:, 0:10] = 21
    labels[:, 50:60] = 22  # 40 px gap
    assert add_pseudo_discs(labels, {21, 22}, max_gap_px=25) == set()


def test_pseudo_disc_borders_become_not_body():
    labels = np.zeros((1, 40, 30), np.int32)
    labels[:, 5:15, 8:22] = 22  # L3
    labels[:, 23:33, 8:22] = 23  # L4: an 8-row gap
    mark_uncertain_disc_borders(labels, add_pseudo_discs(labels, {22, 23}, max_gap_px=25), border_px=2)
    column = labels[0, :, 15]
    np.testing.assert_array_equal(column[13:25], [22, 22, -1, -1, 122, 122, 122, 122, -1, -1, 23, 23])
    np.testing.assert_array_equal(labels[0, 17, 4:26], [0, 0] + [-1] * 2 + [122] * 14 + [-1] * 2 + [0, 0])
    assert (labels[:, 5:15, 8:22] == 22).all() and (labels[:, 23:33, 8:22] == 23).all()  # bodies untouched


@pytest.mark.parametrize("gap, expected", [(1, [122]), (2, [122, 122]), (3, [-1, 122, -1]), (4, [-1, 122, 122, -1]), (5, [-1, -1, 122, -1, -1])])
def test_a_narrow_pseudo_disc_keeps_its_middle_rows(gap, expected):
    labels = np.zeros((1, 40, 10), np.int32)
    labels[:, 5:15, 2:8] = 22
    labels[:, 15 + gap : 25 + gap, 2:8] = 23
    mark_uncertain_disc_borders(labels, add_pseudo_discs(labels, {22, 23}, max_gap_px=25), border_px=2)
    assert labels[0, 15 : 15 + gap, 5].tolist() == expected


def _l2_to_l5():
    labels = np.zeros((2, 70, 24), np.int32)  # slice, row (S->I), column (A->P): 8-row gaps
    labels[:, 2:12, 4:20], labels[:, 20:30, 4:20], labels[:, 38:48, 4:20], labels[:, 56:66, 4:20] = 21, 22, 23, 24
    return labels


def test_training_marks_a_known_label_error_and_the_gap_discs_it_bounds_unknown():
    """VB3_36's L4 (KNOWN_LABEL_ERRORS) is unknown in its training target, and so are the L3-L4 and L4-L5 gap discs
    (a gap to a misplaced body is no disc); L2, L3, L5 and the L2-L3 gap disc are trained as for any case, and the
    validation target (the labels as published) keeps all of it."""
    assert KNOWN_LABEL_ERRORS["VB3_36"] == (23,)
    expert = _l2_to_l5()
    listed, other, published = expert.copy(), expert.copy(), expert.copy()
    annotated = training_labels(listed, "VB3_36", (21, 22, 23, 24), 1.0)
    assert training_labels(other, "VB3_35", (21, 22, 23, 24), 1.0) == {21, 22, 23, 24, 121, 122, 123}
    assert training_labels(published, "VB3_36", (21, 22, 23, 24), 1.0, leave_out_known_errors=False) == {21, 22, 23, 24, 121, 122, 123}
    np.testing.assert_array_equal(published, other)
    assert annotated == {21, 22, 23, 24, 121, 122, 123} - {23, 122, 123}
    target, channels, _ = channel_targets(listed, annotated)
    assert (target[expert == 23] == UNKNOWN).all()
    assert (target[:, 30:38, 4:20] == UNKNOWN).all() and (target[:, 48:56, 4:20] == UNKNOWN).all()  # both gaps of L4
    assert (target == UNKNOWN).sum() == 2 * (10 + 8 + 8) * 16  # nothing else
    for label in (21, 22, 24):
        assert (target[expert == label] == LABEL_TO_CHANNEL[label]).all()
    np.testing.assert_array_equal(listed[:, :30], other[:, :30])  # L2, L3 and the L2-L3 disc with its "not a body" border
    assert (listed[:, 12:20, 10] == [-1, -1, 121, 121, 121, 121, -1, -1]).all()
    assert not channels[[LABEL_TO_CHANNEL[v] for v in (23, 122, 123)]].any() and channels[[LABEL_TO_CHANNEL[v] for v in (21, 22, 24, 121)]].all()


def test_not_body_voxels_accept_background_or_disc_but_not_a_body():
    annotated = torch.zeros(1, NUM_CHANNELS, dtype=torch.bool)
    annotated[0, [0, LABEL_TO_CHANNEL[22], LABEL_TO_CHANNEL[23], LABEL_TO_CHANNEL[122]]] = True
    target = torch.full((1, 1, 1), NOT_BODY, dtype=torch.long)
    for channel, low in ((0, True), (LABEL_TO_CHANNEL[122], True), (LABEL_TO_CHANNEL[123], True), (LABEL_TO_CHANNEL[22], False)):
        logits = torch.full((1, NUM_CHANNELS, 1, 1), -10.0)
        logits[0, channel] = 10.0
        loss = marginal_cross_entropy(logits, target, annotated).item()
        assert (loss < 1e-3) if low else (loss > 10), (channel, loss)


def test_partial_dice_leaves_not_body_voxels_out_of_the_disc_channels():
    annotated = torch.zeros(1, NUM_CHANNELS, dtype=torch.bool)
    annotated[0, [0, LABEL_TO_CHANNEL[122]]] = True
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 1:3] = LABEL_TO_CHANNEL[122]
    logits = torch.full((1, NUM_CHANNELS, 4, 4), -20.0)
    logits[0, LABEL_TO_CHANNEL[122], 0:3] = 20  # disc predicted one row too tall ...
    logits[0, 0, 3:] = 20
    assert partial_dice_loss(logits, target, annotated).item() > 0.1
    target[0, 0] = NOT_BODY  # ... where only "not a body" is known: no penalty
    assert partial_dice_loss(logits, target, annotated).item() < 1e-3


def _two_level_logits(rows_l3, rows_l4, size=(20, 8)):
    """Confident logits: L3 in rows_l3, L4 in rows_l4, background elsewhere."""
    logits = torch.full((1, NUM_CHANNELS, *size), -20.0)
    logits[0, 0] = 20
    for label, rows in ((22, rows_l3), (23, rows_l4)):
        logits[0, :, rows] = -20
        logits[0, LABEL_TO_CHANNEL[label], rows] = 20
    return logits


def test_class_dice_scores_the_union_of_body_levels_voxel_by_voxel():
    target = torch.zeros(1, 20, 8, dtype=torch.long)
    target[0, 0:2] = LABEL_TO_CHANNEL[22]  # 2 rows of L3 at the crop's edge
    target[0, 4:20] = LABEL_TO_CHANNEL[23]  # 16 rows of L4
    annotated = torch.zeros(1, NUM_CHANNELS, dtype=torch.bool)
    annotated[0, [0, LABEL_TO_CHANNEL[22], LABEL_TO_CHANNEL[23]]] = True
    assert class_dice_loss(_two_level_logits(slice(0, 2), slice(4, 20)), target, annotated).item() < 1e-3
    # the 2 rows of L3 missed: per-level Dice loses half (one of two levels), the class Dice 2/18 of its voxels
    missed = _two_level_logits(slice(0, 0), slice(4, 20))
    assert partial_dice_loss(missed, target, annotated).item() == pytest.approx(0.5, abs=0.04)  # 0.47 with the smoothing term
    assert class_dice_loss(missed, target, annotated).item() == pytest.approx(1 - 2 * 16 / (16 + 18), abs=0.01)
    # the two levels swapped: wrong for the per-level Dice, right for the class (the level is labelling's job)
    swapped = _two_level_logits(slice(4, 20), slice(0, 2))
    assert class_dice_loss(swapped, target, annotated).item() < 1e-3 < partial_dice_loss(swapped, target, annotated).item()


def test_class_dice_leaves_unannotated_levels_and_not_body_voxels_out():
    target = torch.zeros(1, 20, 8, dtype=torch.long)
    target[0, 4:20] = LABEL_TO_CHANNEL[23]
    annotated = torch.zeros(1, NUM_CHANNELS, dtype=torch.bool)
    annotated[0, [0, LABEL_TO_CHANNEL[23]]] = True
    # L3 predicted where the case annotates no L3: unknown, not a false body
    assert class_dice_loss(_two_level_logits(slice(0, 2), slice(4, 20)), target, annotated).item() < 1e-3
    # a disc predicted one row too tall where only "not a body" is known: no penalty
    disc = LABEL_TO_CHANNEL[122]
    annotated = torch.zeros(1, NUM_CHANNELS, dtype=torch.bool)
    annotated[0, [0, disc]] = True
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 1:3] = disc
    logits = torch.full((1, NUM_CHANNELS, 4, 4), -20.0)
    logits[0, disc, 0:3] = 20
    logits[0, 0, 3:] = 20
    assert class_dice_loss(logits, target, annotated).item() > 0.1
    target[0, 0] = NOT_BODY
    assert class_dice_loss(logits, target, annotated).item() < 1e-3
    # a sample annotating neither class adds nothing; the term is off by default
    annotated[0, disc] = False
    assert class_dice_loss(logits, target, annotated).item() == 0.0
    torch.manual_seed(0)
    logits = torch.randn(1, NUM_CHANNELS, 4, 4)
    annotated[0, disc] = True
    plain = partial_label_loss(logits, target, annotated).item()
    assert partial_label_loss(logits, target, annotated, 0.5).item() == pytest.approx(plain + 0.5 * class_dice_loss(logits, target, annotated).item(), rel=1e-5)


def _class_map(levels, spacing=(4.0, 1.0, 1.0), with_discs=True, rows_per_level=36):
    """A network class map: bodies of 28 mm and discs of 8 mm stacked from the top, 10 slices thick."""
    shape = (10, rows_per_level * len(levels) + 20, 60)
    classes = np.zeros(shape, np.uint8)
    for i, label in enumerate(levels):
        top = 10 + i * rows_per_level
        classes[:, top : top + 28, 15:45] = LABEL_TO_CHANNEL[label]
        below = scheme.next_vertebra(label)
        if with_discs and below is not None and scheme.disc_label(label) in LABEL_TO_CHANNEL and i + 1 < len(levels):
            classes[:, top + 28 : top + 36, 17:43] = LABEL_TO_CHANNEL[scheme.disc_label(label)]
    return classes


def test_labelling_names_levels_and_puts_discs_between_their_vertebrae():
    levels = [20, 21, 22, 23, 24, 26]
    labels, report = label_levels(_class_map(levels), (4.0, 1.0, 1.0))
    assert report.levels == ["L1", "L1-L2", "L2", "L2-L3", "L3", "L3-L4", "L4", "L4-L5", "L5", "L5-S1", "S1"]
    assert report.anchor == "S1"
    assert report.confidence > 0.6
    rows = {int(v): np.argwhere(labels == v)[:, 1].mean() for v in np.unique(labels) if v}
    for disc in (120, 121, 122, 123, 124):
        above = scheme.vertebra_above_disc(disc)
        assert rows[above] < rows[disc] < rows[scheme.next_vertebra(above)]


def test_labelling_corrects_an_inconsistent_vote():
    classes = _class_map([20, 21, 22, 23, 24, 26])
    classes[classes == LABEL_TO_CHANNEL[22]] = LABEL_TO_CHANNEL[21]  # the network calls L3 "L2" too
    labels, report = label_levels(classes, (4.0, 1.0, 1.0))
    assert [n for n in report.levels if "-" not in n] == ["L1", "L2", "L3", "L4", "L5", "S1"]


def test_labelling_removes_small_islands_and_far_blobs():
    classes = _class_map([22, 23, 24])
    classes[0:2, 100:104, 0:3] = LABEL_TO_CHANNEL[21]  # 32 voxels x 4 mm3: an island
    labels, report = label_levels(classes, (4.0, 1.0, 1.0))
    assert report.removed_islands >= 1
    assert 21 not in np.unique(labels)


def test_a_body_cut_by_the_field_of_view_is_kept_though_small():
    classes = _class_map([20, 21, 22, 23, 24])  # bodies of 10 x 4 mm x 28 x 30 mm = 33600 mm3
    classes[:, 0:3, 15:45] = LABEL_TO_CHANNEL[19]  # 3 rows of T12 at the top edge: 3600 mm3, 11 % of a body
    labels, report = label_levels(classes, (4.0, 1.0, 1.0))
    assert 19 in np.unique(labels) and report.levels[0] == "T12"
    away_from_edge = np.concatenate([np.zeros((10, 20, 60), np.uint8), classes], axis=1)  # the same 3 rows, 20 mm inside
    labels, report = label_levels(away_from_edge, (4.0, 1.0, 1.0))
    assert 19 not in np.unique(labels) and report.removed_islands >= 1
    at_bottom = _class_map([20, 21, 22, 23, 24])
    at_bottom[:, -3:, 15:45] = LABEL_TO_CHANNEL[26]  # a fragment at the bottom edge: sacral, not a body to count
    labels, report = label_levels(at_bottom, (4.0, 1.0, 1.0))
    assert 26 not in np.unique(labels) and report.levels[-1] == "L5"


def test_no_vertebrae_found_gives_an_empty_result():
    labels, report = label_levels(np.zeros((5, 50, 50), np.uint8), (4.0, 1.0, 1.0))
    assert not labels.any()
    assert "no vertebrae found" in report.flags


def _save_model(tmp_path, tamper=None):
    network = build_network(NetworkConfig(channels=(4, 8), strides=(2,), num_res_units=0))
    info = store.write_model(tmp_path / "m", network.state_dict(), {"name": "tiny", "version": "1", "network": NetworkConfig(channels=(4, 8), strides=(2,), num_res_units=0).to_dict()})
    if tamper:
        tamper(info)
    return info


def test_model_loads_after_checksum_verification(tmp_path):
    info = _save_model(tmp_path)
    network = store.load_network(store.find_model(str(info.folder)))
    assert sum(p.numel() for p in network.parameters()) > 0


def test_corrupt_weights_are_refused(tmp_path):
    info = _save_model(tmp_path, lambda i: i.weights_path.write_bytes(i.weights_path.read_bytes()[:-10] + b"0123456789"))
    with pytest.raises(ModelError, match="corrupt or was changed"):
        store.load_network(info)


def test_the_model_list_marks_a_model_whose_weights_fail_their_checksum(tmp_path, monkeypatch, capsys):
    from SpineAnalysisLib.cli import main

    config = NetworkConfig(channels=(4, 8), strides=(2,), num_res_units=0)
    state = build_network(config).state_dict()
    for version in ("1", "2"):
        info = store.write_model(tmp_path / version, state, {"name": "tiny", "version": version, "network": config.to_dict()})
    info.weights_path.write_bytes(info.weights_path.read_bytes()[:-10] + b"0123456789")  # version 2 broken
    monkeypatch.setenv("SPINEANALYSIS_MODELS", str(tmp_path))
    assert main(["models"]) == 0
    lines = {line.split("\t")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "UNUSABLE" not in lines["tiny 1"]
    assert "\tUNUSABLE: model tiny 2: " in lines["tiny 2"] and "is corrupt or was changed" in lines["tiny 2"]


def test_missing_weights_are_named(tmp_path):
    info = _save_model(tmp_path, lambda i: i.weights_path.unlink())
    with pytest.raises(ModelError, match="is missing"):
        store.load_network(info)


class Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_pickled_objects_are_not_executed(tmp_path, capsys):
    def replace_with_pickle(info):
        torch.save({"weight": Payload()}, info.weights_path)
        manifest = json.loads((info.folder / "manifest.json").read_text(encoding="utf-8"))
        manifest["sha256"] = store.sha256_of(info.weights_path)
        (info.folder / "manifest.json").write_text(json.dumps(manifest))

    info = _save_model(tmp_path, replace_with_pickle)
    with pytest.raises(ModelError, match="could not be loaded"):
        store.load_network(store.find_model(str(info.folder)))
    assert "arbitrary code ran" not in capsys.readouterr().out


def test_unknown_model_name_lists_what_exists():
    with pytest.raises(ModelError, match="not found"):
        store.find_model("no-such-model")


def test_joined_bodies_are_split_at_the_missed_disc():
    classes = _class_map([20, 21, 22, 23, 24, 26])
    rows = np.arange(classes.shape[1])
    # the L1-L2 disc is missed: a narrow bridge of "L1" joins L1 and L2
    bridge = (rows >= 10 + 28) & (rows < 10 + 36)
    classes[:, bridge, :] = 0
    classes[:, bridge, 28:32] = LABEL_TO_CHANNEL[20]
    classes[classes == LABEL_TO_CHANNEL[21]] = LABEL_TO_CHANNEL[20]  # and calls both bodies L1
    labels, report = label_levels(classes, (4.0, 1.0, 1.0))
    assert [n for n in report.levels if "-" not in n] == ["L1", "L2", "L3", "L4", "L5", "S1"]
    assert any("separated" in f for f in report.flags)


def test_a_body_with_two_level_votes_in_the_same_rows_stays_one_body():
    classes = _class_map([20, 21, 22, 23, 24, 26])
    l3 = classes == LABEL_TO_CHANNEL[22]
    left_half = np.zeros_like(l3)
    left_half[:5] = True
    classes[l3 & left_half] = LABEL_TO_CHANNEL[23]  # half of L3's slices vote "L4"
    labels, report = label_levels(classes, (4.0, 1.0, 1.0))
    assert [n for n in report.levels if "-" not in n] == ["L1", "L2", "L3", "L4", "L5", "S1"]


def test_sacral_segments_below_s1_do_not_shift_the_count():
    classes = _class_map([18, 19, 20, 21, 22, 23, 24, 26, 26, 26], with_discs=False)  # S1 + two sacral segments voting "S1"
    labels, report = label_levels(classes, (4.0, 1.0, 1.0))
    assert [n for n in report.levels if "-" not in n] == ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"]
    assert any("sacral segments" in f for f in report.flags)


def test_slice_smoothing_mixes_only_close_slices():
    from SpineAnalysisLib.model.predict import slice_smoothing_weights

    assert len(slice_smoothing_weights(1.0, 1.0)) == 5  # 1 mm slices: neighbours within 2 mm
    assert list(slice_smoothing_weights(4.0, 1.0)) == [1.0]  # thick slices are never mixed
    assert list(slice_smoothing_weights(1.0, 0.0)) == [1.0]
    assert list(slice_smoothing_weights(None, 1.0)) == [1.0]


def test_smoothed_prediction_is_independent_of_the_batch_size():
    """Batches fetch the neighbouring slices they need, so batch edges leave no trace."""
    from SpineAnalysisLib.model.predict import predict_volume, slice_smoothing_weights

    torch.manual_seed(0)
    network = build_network(NetworkConfig(channels=(4, 8), strides=(2,), num_res_units=0))
    volume = np.random.default_rng(1).random((11, 32, 32)).astype(np.float32)
    device = torch.device("cpu")
    one_batch, _ = predict_volume(network, volume, device, slices_per_batch=11, slice_spacing_mm=1.0, smoothing_sigma_mm=1.0)
    for batch_size in (1, 2, 3, 10):  # smaller and larger than the 2 neighbours each side
        small_batches, _ = predict_volume(network, volume, device, slices_per_batch=batch_size, slice_spacing_mm=1.0, smoothing_sigma_mm=1.0)
        np.testing.assert_array_equal(one_batch, small_batches)

    with torch.inference_mode():  # the same by hand: weighted mean of slice probabilities, renormalised at the ends
        probs = torch.softmax(network.eval()(torch.from_numpy(volume)[:, None]), dim=1).numpy()
    weights = slice_smoothing_weights(1.0, 1.0)
    expected = np.zeros_like(probs)
    for i in range(len(volume)):
        used = [(w, i + k - 2) for k, w in enumerate(weights) if 0 <= i + k - 2 < len(volume)]
        expected[i] = sum(w * probs[j] for w, j in used) / sum(w for w, _ in used)
    assert (one_batch == expected.argmax(axis=1)).mean() > 0.999
    unsmoothed, _ = predict_volume(network, volume, device, slices_per_batch=4)
    assert (unsmoothed == probs.argmax(axis=1)).mean() > 0.999


def test_body_threshold_decides_body_on_the_summed_levels():
    from SpineAnalysisLib.model.predict import decide_classes

    l3, l4, disc = LABEL_TO_CHANNEL[22], LABEL_TO_CHANNEL[23], LABEL_TO_CHANNEL[122]
    probs = torch.zeros(1, NUM_CHANNELS, 1, 3)
    probs[0, [0, l3, l4], 0, 0] = torch.tensor([0.4, 0.35, 0.25])  # body 0.6 in all, split over two levels
    probs[0, [0, l3], 0, 1] = torch.tensor([0.45, 0.55])  # body 0.55
    probs[0, [disc, l3], 0, 2] = torch.tensor([0.2, 0.8])  # body 0.8
    _, plain = decide_classes(probs)
    assert plain[0, 0].tolist() == [0, l3, l3]  # argmax: background wins the split voxel
    best, index = decide_classes(probs, body_probability_threshold=0.58)
    assert index[0, 0].tolist() == [l3, 0, l3]  # the split voxel is body (0.6), the 0.55 voxel is not
    assert best[0, 0].tolist() == pytest.approx([0.35, 0.45, 0.8])


def test_test_time_scales_average_the_zoomed_predictions():
    from SpineAnalysisLib.model.predict import predict_volume
    from SpineAnalysisLib.model.preprocessing import resample_slices

    torch.manual_seed(0)
    network = build_network(NetworkConfig(channels=(4, 8), strides=(2,), num_res_units=0)).eval()
    volume = np.random.default_rng(2).random((3, 64, 64)).astype(np.float32)
    device = torch.device("cpu")
    single, _ = predict_volume(network, volume, device, test_time_scales=(1.0,))
    plain, _ = predict_volume(network, volume, device)
    np.testing.assert_array_equal(single, plain)

    scales = (0.75, 1.0, 1.25)  # 48, 64 and 80 pixels: whole windows, no padding
    averaged, confidence = predict_volume(network, volume, device, test_time_scales=scales)
    with torch.inference_mode():  # by hand: run at each zoom, back to 64 x 64, mean of the softmax
        batch = torch.from_numpy(volume)[:, None]
        probs = []
        for scale in scales:
            logits = network(resample_slices(batch, (round(64 * scale), round(64 * scale))))
            probs.append(torch.softmax(resample_slices(logits, (64, 64)), dim=1))
        expected = torch.stack(probs).mean(0)
    assert (averaged == expected.argmax(1).numpy()).mean() > 0.99
    assert (averaged != single).any()  # the zooms changed something
    np.testing.assert_allclose(confidence.astype(np.float32), expected.max(1).values.numpy(), atol=0.02)


def test_test_time_mirror_averages_the_left_right_mirrored_volume():
    from SpineAnalysisLib.model.predict import predict_volume

    torch.manual_seed(0)
    network = build_network(NetworkConfig(channels=(4, 8), strides=(2,), num_res_units=0, in_channels=5, slice_context_mm=2.0)).eval()
    volume = np.random.default_rng(3).random((7, 32, 32)).astype(np.float32)
    device = torch.device("cpu")
    kwargs = dict(slice_spacing_mm=1.0, smoothing_sigma_mm=1.0, test_time_scales=(0.75, 1.0), slices_per_batch=3)
    plain, _ = predict_volume(network, volume, device, **kwargs)
    mirrored_input, _ = predict_volume(network, volume[::-1].copy(), device, **kwargs)
    averaged, confidence = predict_volume(network, volume, device, test_time_mirror=True, **kwargs)
    assert (averaged != plain).any() and (plain != mirrored_input[::-1]).any()  # an untrained network is not symmetric
    # the mirror-averaged prediction of a mirrored volume is the mirror image of the volume's own
    again, again_confidence = predict_volume(network, volume[::-1].copy(), device, test_time_mirror=True, **kwargs)
    assert (again[::-1] == averaged).mean() > 0.999
    np.testing.assert_allclose(again_confidence[::-1].astype(np.float32), confidence.astype(np.float32), atol=2e-3)


def test_fast_is_deprecated_and_keeps_the_models_settings():
    from SpineAnalysisLib.inference import inference_settings

    info = store.find_model()
    mirrored = dataclasses.replace(info, manifest=dict(info.manifest, inference=dict(info.manifest["inference"], test_time_mirror=True)))
    assert inference_settings(mirrored).test_time_mirror and len(inference_settings(mirrored).test_time_scales) == 3
    assert inference_settings(mirrored, fast=True) == inference_settings(mirrored)


@pytest.mark.parametrize(
    "settings, problem",
    [({"test_time_scales": ()}, "scales"), ({"test_time_scales": (0.1,)}, "scales"), ({"body_probability_threshold": 1.0}, "threshold"), ({"slice_smoothing_sigma_mm": -1}, "smoothing")],
)
def test_inference_settings_refuse_nonsense(settings, problem):
    from SpineAnalysisLib.model.predict import InferenceSettings

    with pytest.raises(ValueError, match=problem):
        InferenceSettings(**settings).validated()


def test_a_manifest_with_bad_inference_settings_is_a_clear_model_error(tmp_path):
    from SpineAnalysisLib.inference import segment_image

    info = store.find_model()
    folder = tmp_path / "broken-settings"
    folder.mkdir()
    (folder / "weights.pt").write_bytes(info.weights_path.read_bytes())
    manifest = dict(info.manifest, inference={"test_time_scales": [], "slice_smoothing_sigma_mm": 1.0})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    image = sitk.Image(32, 32, 8, sitk.sitkFloat32)
    with pytest.raises(ModelError, match="inference settings are invalid.*scales"):
        segment_image(image, str(folder), device="cpu")


def test_a_manifest_mirror_setting_must_be_true_or_false():
    from SpineAnalysisLib.model.predict import InferenceSettings

    assert InferenceSettings.from_manifest({"inference": {"test_time_mirror": True}}).test_time_mirror
    with pytest.raises(ValueError, match="test_time_mirror.*'yes'"):
        InferenceSettings.from_manifest({"inference": {"test_time_mirror": "yes"}})


def test_inference_settings_of_an_older_manifest_are_the_plain_ones():
    from SpineAnalysisLib.model.predict import InferenceSettings

    assert InferenceSettings.from_manifest({}) == InferenceSettings()
    old = InferenceSettings.from_manifest({"inference": {"slice_smoothing_sigma_mm": 1.0}})
    assert old == InferenceSettings(slice_smoothing_sigma_mm=1.0, test_time_scales=(1.0,), body_probability_threshold=0.0, test_time_mirror=False)
