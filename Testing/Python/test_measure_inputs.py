"""Unusable inputs give an InputError with a clear one-line message, never a traceback or a made-up number."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import phantoms as ph
from SpineAnalysisLib import imageio
from SpineAnalysisLib.errors import InputError
from SpineAnalysisLib.measurements import measure_case


@pytest.fixture(scope="module")
def case():
    spine = ph.build_spine((23, 24), heights=26.0, discs=10.0)
    label_map, image = ph.render_phantom(spine, (1.0, 1.0, 1.0), ph.LPS_DIRECTION, margin=6.0)
    return label_map, image


def _like(array, reference):
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(reference)
    return result


def _raises(match, *args, **kwargs) -> str:
    with pytest.raises(InputError, match=match) as info:
        measure_case(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    return message


def test_empty_label_map(case):
    label_map, image = case
    empty = _like(np.zeros(sitk.GetArrayViewFromImage(label_map).shape, np.uint16), label_map)
    assert "empty" in _raises("label map", image, empty)
    assert "no labelled voxel" in _raises("empty", None, empty)


def test_labels_outside_the_scheme(case):
    label_map, image = case
    array = sitk.GetArrayFromImage(label_map)
    array[array == 23] = 99
    array[0, 0, 0] = 255
    message = _raises("outside the SpineAnalysis scheme", image, _like(array, label_map))
    assert "99" in message and "255" in message
    # also for 32-bit and signed label maps
    assert "99" in _raises("outside", None, _like(array.astype(np.int32), label_map))
    negative = array.astype(np.int16)
    negative[1, 1, 1] = -5
    assert "-5" in _raises("outside", None, _like(negative, label_map))


def test_non_integer_label_map(case):
    label_map, _ = case
    array = sitk.GetArrayFromImage(label_map).astype(np.float32)
    array[2, 2, 2] = 0.5
    _raises("non-integer", None, _like(array, label_map))


def test_grid_mismatch(case):
    label_map, image = case
    shifted = sitk.Image(label_map)
    shifted.SetOrigin(tuple(np.asarray(label_map.GetOrigin()) + [0, 0, 2.0]))
    message = _raises("different grids", image, shifted)
    assert "resample" in message
    spacing = sitk.Image(label_map)
    spacing.SetSpacing((1.0, 1.0, 1.5))
    _raises("different grids", image, spacing)


def test_two_dimensional_inputs(case):
    label_map, image = case
    image_2d = image[:, :, 5]
    assert image_2d.GetDimension() == 2
    assert "2D" in _raises("image", image_2d, label_map)
    assert "2D" in _raises("label map", None, label_map[:, :, 5])


def test_non_finite_voxels(case):
    label_map, image = case
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array[3, 3, 3] = np.nan
    array[4, 4, 4] = np.inf
    message = _raises("NaN or infinite", _like(array, image), label_map)
    assert "2 voxels" in message


def test_unreadable_and_missing_files(tmp_path):
    broken = tmp_path / "labels.nii.gz"
    broken.write_bytes(b"this is not a NIfTI file")
    with pytest.raises(InputError, match="not a readable image") as info:
        imageio.read_label_map(broken)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="no such file"):
        imageio.read_image(tmp_path / "missing.nrrd")


def test_bad_options(case):
    label_map, image = case
    _raises("sex", image, label_map, sex="unknown")
    _raises("age", image, label_map, age=float("nan"))
    _raises("labels: 99", image, label_map, labels=[99])
    _raises("labels", image, label_map, labels=["L4"])


def test_wrong_types(case):
    label_map, _ = case
    _raises("SimpleITK image", None, sitk.GetArrayFromImage(label_map))
