"""Localise, then segment: the box from the coarse pass and the edge padding (SpineAnalysisLib.model.localise)."""

import numpy as np

from SpineAnalysisLib.model.localise import EDGE_PAD_MM, MARGIN_MM, SpineBox, box_from_coarse, coarse_slices, edge_padding


def test_coarse_slices_are_about_8_mm_apart_and_centred():
    assert list(coarse_slices(77, 1.0)) == [2, 10, 18, 26, 34, 42, 50, 58, 66, 74]
    assert list(coarse_slices(15, 4.0)) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert list(coarse_slices(3, 10.0)) == [0, 1, 2]


def test_the_box_holds_the_column_with_its_margin_and_ignores_a_far_island():
    shape, spacing = (40, 200, 300), (2.0, 1.0, 1.0)
    sampled = coarse_slices(shape[0], spacing[0])
    found = np.zeros((len(sampled), *shape[1:]), bool)
    column_slices = (sampled >= 12) & (sampled <= 26)
    found[column_slices, 30:180, 120:160] = True  # the column: bodies and discs touching
    found[1, 50:55, 250:255] = True  # a small false positive far in front of it
    box = box_from_coarse(found, sampled, shape, spacing)
    assert (box.row_start, box.row_stop) == (30 - MARGIN_MM, 200)  # clipped to the image
    assert (box.column_start, box.column_stop) == (120 - MARGIN_MM, 160 + MARGIN_MM)
    assert box.slice_start <= int(sampled[column_slices].min()) - 4 and box.slice_stop >= int(sampled[column_slices].max()) + 5
    assert box.column_stop < 250  # the island did not widen the box
    assert 0 < box.fraction_of(shape) < 0.5


def test_nothing_found_gives_no_box():
    assert box_from_coarse(np.zeros((3, 20, 20), bool), np.array([0, 4, 8]), (10, 20, 20), (1.0, 1.0, 1.0)) is None


def test_the_input_is_mirrored_only_at_the_images_top_edge():
    shape = (10, 100, 100)
    pad = int(EDGE_PAD_MM)
    assert edge_padding(SpineBox.whole(shape), shape) == (pad, 0, 0, 0)
    assert edge_padding(SpineBox(0, 10, 5, 100, 0, 100), shape) == (0, 0, 0, 0)
    assert edge_padding(SpineBox.whole(shape), shape, working_spacing_mm=0.5) == (2 * pad, 0, 0, 0)
