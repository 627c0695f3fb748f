"""Reading and writing images: geometry kept exactly, bad inputs named in one line."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineAnalysisLib import imageio
from SpineAnalysisLib.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


def oblique_image(size=(12, 10, 8), spacing=(0.6, 0.6, 3.5)):
    image = sitk.GetImageFromArray(np.arange(np.prod(size[::-1]), dtype=np.int16).reshape(size[::-1]))
    image.SetSpacing(spacing)
    image.SetOrigin((10.5, -20.25, 33.0))
    angle = np.radians(17)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    image.SetDirection(tuple(rotation.ravel()))
    return image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_geometry_survives_a_round_trip(tmp_path, suffix):
    image = oblique_image()
    path = imageio.write_image(image, tmp_path / f"image{suffix}")
    back = imageio.read_image(path)
    assert imageio.same_grid(image, back)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def test_dicom_series_folder_is_read_with_its_geometry(tmp_path):
    image = sitk.Cast(oblique_image(size=(16, 16, 5), spacing=(0.7, 0.7, 4.0)), sitk.sitkInt16)
    image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "MR", "0020|000d": "1.2.3.4", "0020|000e": "1.2.3.4.5", "0020|0013": str(k + 1),
            "0020|0032": "\\".join(map(str, position)), "0020|0037": "1\\0\\0\\0\\1\\0", "0028|0030": "0.7\\0.7", "0018|0050": "4.0",
        }.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"slice{k:03d}.dcm"))
        writer.Execute(slice_)
    back = imageio.read_image(tmp_path)
    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    assert back.GetMetaData("0008|0060") == "MR"


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        imageio.read_image(tmp_path / "nothing.nii.gz")


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"this is not an image")
    with pytest.raises(InputError, match="not a readable image") as error:
        imageio.read_image(path)
    assert "\n" not in str(error.value)


def test_empty_file_is_named_as_such(tmp_path):
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"")  # was: "not a readable image (sitk::ERROR: Unable to determine ImageIO reader for ...)"
    with pytest.raises(InputError, match=r"scan.nii.gz: is an empty file \(0 bytes\)$"):
        imageio.read_image(path)


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM series"):
        imageio.read_image(tmp_path)


def test_folder_without_dicom_is_one_line_on_the_real_stderr(tmp_path):
    """GDCM prints its own multi-line warning on file descriptor 2 (not through Python's sys.stderr), so only a
    separate process sees whether the refusal is really one line."""
    folder = tmp_path / "scans"
    folder.mkdir()
    sitk.WriteImage(sitk.Image(8, 8, 8, sitk.sitkInt16), str(folder / "t2.nii.gz"))
    done = subprocess.run([sys.executable, "-m", "SpineAnalysisLib", "analyze", str(folder), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "no DICOM series" in done.stderr and "t2.nii.gz" in done.stderr
    assert not (tmp_path / "out").exists()


def test_2d_image_is_refused(tmp_path):
    path = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.Image(20, 20, sitk.sitkUInt8), str(path))
    with pytest.raises(InputError, match="2D image"):
        imageio.read_image(path)


def test_non_finite_voxels_are_named():
    image = sitk.GetImageFromArray(np.array([[[1.0, np.nan], [np.inf, 2.0]]] * 2, dtype=np.float32))
    with pytest.raises(InputError, match="4 voxels are NaN or infinite"):
        imageio.check_finite(image, "image")


def test_label_checks():
    image = oblique_image()
    labels = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(image)
    with pytest.raises(InputError, match="empty"):
        imageio.check_label_map(labels, image)
    labels[2, 2, 2] = 99
    with pytest.raises(InputError, match="labels 99 are outside the SpineAnalysis scheme"):
        imageio.check_label_map(labels, image)
    labels[2, 2, 2] = 23
    assert imageio.check_label_map(labels, image).max() == 23
    shifted = sitk.Image(labels)
    shifted.SetOrigin((0, 0, 0))
    with pytest.raises(InputError, match="different grids"):
        imageio.check_label_map(shifted, image)


def test_probability_map_is_not_a_label_map():
    image = sitk.GetImageFromArray(np.full((3, 3, 3), 0.5, np.float32))
    with pytest.raises(InputError, match="non-integer"):
        imageio.check_label_map(image)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    imageio.write_image(oblique_image(), tmp_path / "a.nii.gz")
    imageio.write_text("x", tmp_path / "b.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.txt"]


def test_lps_to_ras():
    np.testing.assert_allclose(imageio.lps_to_ras([1.0, 2.0, 3.0]), [-1.0, -2.0, 3.0])


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        imageio.write_text("x", tmp_path / "b.txt")
        imageio.write_image(oblique_image(), tmp_path / "a.nrrd")
    finally:
        os.umask(umask)
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "a.nrrd").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "name, expected",
    [("sub-01_T2w.nii.gz", "sub-01_T2w"), ("case.seg.nrrd", "case"), ("scan.NRRD", "scan"), ("IM0001.dcm", "IM0001"), ("series_folder", "series_folder"), ("a.b.mha", "a.b")],
)
def test_strip_image_suffix_removes_the_longest_known_suffix(name, expected):
    assert imageio.strip_image_suffix(name) == expected


def test_seg_nrrd_label_map_opens_in_slicer_with_the_level_names(tmp_path):
    """'segment -o labels.seg.nrrd' wrote a bare label map: Slicer named its segments Segment_20, Segment_123 ..."""
    from conftest import build_scene  # skips without slicer-core

    harness = build_scene()
    import slicer

    array = np.zeros((6, 8, 10), np.uint16)
    array[1:3, 2:5, 3:7], array[3, 2:5, 3:7], array[4:6, 2:5, 3:7] = 23, 123, 24
    labels = sitk.GetImageFromArray(array)
    labels.SetSpacing((0.8, 0.8, 4.0))
    path = imageio.write_image(labels, tmp_path / "labels.seg.nrrd")
    assert same_voxels(sitk.ReadImage(str(path)), labels)
    node = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
    assert [(s.GetName(), s.GetLabelValue()) for s in segments] == [("L4", 23), ("L4-L5", 123), ("L5", 24)]
    from SpineAnalysisLib import labels as scheme

    assert np.allclose(segments[0].GetColor(), scheme.structure_color(23), atol=1e-4)


def same_voxels(a: sitk.Image, b: sitk.Image) -> bool:
    return imageio.same_grid(a, b) and np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
