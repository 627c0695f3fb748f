"""A vertebral body's corners averaged over its mid-sagittal slab (``sections.SLAB_HALF_WIDTH_MM``), on phantoms."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import phantoms as ph
from SpineAnalysisLib.measure import inputs, plane
from SpineAnalysisLib.measure.sections import SLAB_HALF_WIDTH_MM, Spine
from SpineAnalysisLib.measurements import measure_case

HEIGHT = 26.0


def value(rows, level, parameter):
    return next(r.value for r in rows if r.level == level and r.parameter == parameter)


@pytest.fixture(scope="module")
def lumbar():
    spine = ph.build_spine((21, 22, 23), heights=HEIGHT, discs=10.0, top=(0.0, 60.0))
    return ph.render_phantom(spine, (1.0, 1.0, 1.0), ph.LPS_DIRECTION, margin=6.0)


def _centroid_column(label_map: sitk.Image, label: int) -> int:
    """x index (LPS left-right, the sagittal slice) of the label's centroid."""
    array = sitk.GetArrayFromImage(label_map)
    return int(round(float(np.nonzero(array == label)[2].mean())))


def test_one_slice_with_a_lowered_endplate_moves_the_heights_by_a_third(lumbar):
    """Only the centroid's sagittal slice of L3 lacks its top 3 mm (a mask edge that wanders by a few voxels from
    slice to slice): the single-plane heights would read 23 mm; the slab's are the mean of 23, 26 and 26 mm."""
    label_map, image = lumbar
    array = sitk.GetArrayFromImage(label_map)
    x = _centroid_column(label_map, 22)
    rows_z = np.nonzero((array[:, :, x] == 22).any(axis=1))[0]
    top = rows_z.max()  # LPS z grows superior
    slice_ = array[:, :, x]
    slice_[top - 2: top + 1][slice_[top - 2: top + 1] == 22] = 0
    lowered = sitk.GetImageFromArray(array)
    lowered.CopyInformation(label_map)

    intact = measure_case(image, label_map)
    rows = measure_case(image, lowered)
    for parameter in ("height_anterior_mm", "height_posterior_mm"):
        assert value(intact, "L3", parameter) == pytest.approx(HEIGHT, abs=1.0)  # one voxel: rendered edges are inclusive
        assert value(rows, "L3", parameter) == pytest.approx(value(intact, "L3", parameter) - 1.0, abs=0.4), parameter
    # the L2-L3 disc grows by the same third of the lowered endplate, not by all of it
    assert value(rows, "L2-L3", "height_middle_mm") == pytest.approx(value(intact, "L2-L3", "height_middle_mm") + 1.0, abs=0.4)


def test_a_side_plane_outside_the_volume_is_left_out(lumbar):
    """The volume ends 1 mm lateral of L3's centroid plane, so the +2 mm side plane lies outside it: the
    body is measured on the planes that are left, with no value lost."""
    label_map, image = lumbar
    x = _centroid_column(label_map, 22)
    keep_upper = label_map.GetSize()[0] - (x + 2)  # slices x + 2 ... are removed
    cropped_labels = ph.crop(label_map, upper=(keep_upper, 0, 0))
    cropped_image = ph.crop(image, upper=(keep_upper, 0, 0))
    spine = Spine(inputs.load(cropped_image, cropped_labels))
    assert spine.slab_offset() == SLAB_HALF_WIDTH_MM
    rows = measure_case(cropped_image, cropped_labels)
    for parameter in ("height_anterior_mm", "height_posterior_mm", "wedge_ratio", "genant_grade"):
        assert value(rows, "L3", parameter) is not None, parameter
    assert value(rows, "L3", "height_anterior_mm") == pytest.approx(value(measure_case(image, label_map), "L3", "height_anterior_mm"), abs=0.2)
    assert value(rows, "L3", "genant_grade") == 0


def test_thick_slices_put_the_side_planes_one_slice_away():
    spine_phantom = ph.build_spine((21, 22, 23), heights=HEIGHT, discs=10.0, top=(0.0, 60.0))
    label_map, image = ph.render_phantom(spine_phantom, (4.4, 0.5, 0.5), ph.LPS_DIRECTION, margin=6.0)
    spine = Spine(inputs.load(image, label_map))
    assert spine.slab_offset() == pytest.approx(4.4)
    rows = measure_case(image, label_map)
    assert value(rows, "L3", "height_anterior_mm") == pytest.approx(HEIGHT, abs=1.0)


def test_a_side_plane_cut_by_the_field_of_view_is_left_out(lumbar):
    """In the sagittal plane 2 mm beside L3's centroid plane only, a strip of L3's label runs forward to the volume's
    anterior border (a mask edge that reaches the field of view in one plane): that side plane's outline is cut, so its
    corners, fitted on a body with a forward spur, are not averaged in; L3's heights and endplate length stay those
    of the intact body and the centre plane, which the border does not reach, keeps every value."""
    label_map, image = lumbar
    array = sitk.GetArrayFromImage(label_map)
    x = _centroid_column(label_map, 22)
    side = array[:, :, x + 2]
    rows_z, cols_y = np.nonzero(side == 22)
    middle = (rows_z.min() + rows_z.max()) // 2
    front = cols_y.min()  # LPS y grows posterior: index 0 is the volume's anterior border
    strip = side[middle - 3: middle + 4, :front]
    strip[strip == 0] = 22
    spur = sitk.GetImageFromArray(array)
    spur.CopyInformation(label_map)
    spine = Spine(inputs.load(image, spur))
    depth = plane.SAGITTAL.depth(spine.volume.stats[22].centroid_lps)
    assert not spine.section(22).cut
    assert [spine._plane_section(22, plane.SAGITTAL, depth + o).cut for o in (-spine.slab_offset(), spine.slab_offset())] == [True, False]
    intact, rows = measure_case(image, label_map), measure_case(image, spur)
    for parameter in ("height_anterior_mm", "height_middle_mm", "height_posterior_mm", "ap_depth_mm", "wedge_ratio"):
        assert value(rows, "L3", parameter) == pytest.approx(value(intact, "L3", parameter), abs=0.3), parameter
    assert value(rows, "L3", "genant_grade") == 0
