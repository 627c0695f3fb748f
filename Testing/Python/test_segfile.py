"""A segmentation an annotator edited and saved in 3D Slicer (.seg.nrrd) reads back with the right levels.

The files are written by Slicer's own vtkMRMLSegmentationStorageNode (slicer-core), after the edits an annotator
makes: add a missed disc, delete a false one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineAnalysisLib import imageio
from SpineAnalysisLib.cli import main
from SpineAnalysisLib.errors import InputError


def _labels():
    array = np.zeros((8, 12, 14), np.uint16)  # margins all round: Slicer crops the saved file to the segments
    array[2:6, 2:4, 3:10], array[2:6, 5, 3:10], array[2:6, 6:8, 3:10] = 23, 123, 24  # L4, L4-L5, L5
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 4.0))
    image.SetOrigin((5.0, -3.0, 12.0))
    return image, array


def _edit_in_slicer(harness, path, out, name="L4-L5", row=2):
    """Load ``path`` as Slicer does, delete the model's L4-L5, paint a disc ``name`` into ``row`` of the segments'
    extent (2: the empty row between L4 and the old disc; Slicer gives it value 1), save."""
    import slicer
    from vtkmodules.util import numpy_support

    node = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    layer = slicer.vtkOrientedImageData()
    node.GetBinaryLabelmapRepresentation(segmentation.GetSegmentIdBySegmentName("L4"), layer)
    segmentation.RemoveSegment(segmentation.GetSegmentIdBySegmentName("L4-L5"))
    added = segmentation.AddEmptySegment(name, name)
    disc = slicer.vtkOrientedImageData()
    disc.DeepCopy(layer)
    extent = disc.GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    mask = np.zeros(shape, np.uint8)
    mask[:, row, :] = 1
    numpy_support.vtk_to_numpy(disc.GetPointData().GetScalars())[:] = mask.ravel()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(disc, node, added, logic.MODE_REPLACE, disc.GetExtent())
    storage.SetFileName(str(out))
    assert storage.WriteData(node)
    return segmentation.GetSegment(added).GetLabelValue(), extent


def test_a_segmentation_edited_and_saved_in_slicer_reads_with_its_levels(tmp_path, capsys):
    """Read as it stood, the added disc (Slicer's value 1) was C1, and the file, cropped to the segments, was refused
    as 'on different grids' by export-training."""
    from conftest import build_scene  # skips without slicer-core

    harness = build_scene()
    image, array = _labels()
    imageio.write_image(image, tmp_path / "model.seg.nrrd")
    value, extent = _edit_in_slicer(harness, tmp_path / "model.seg.nrrd", tmp_path / "edited.seg.nrrd")
    saved = sitk.ReadImage(str(tmp_path / "edited.seg.nrrd"))
    assert value not in (123, 0) and saved.GetSize() != image.GetSize()  # Slicer's own value, a cropped file
    expected = array.copy()
    expected[expected == 123] = 0
    k0, j0, i0 = extent[4], extent[2], extent[0]
    expected[k0:extent[5] + 1, j0 + 2, i0:extent[1] + 1] = 123
    reference = sitk.Image(image.GetSize(), sitk.sitkInt16)
    reference.CopyInformation(image)
    back = imageio.read_label_map(tmp_path / "edited.seg.nrrd", reference=reference)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), expected)
    assert imageio.same_grid(back, image)

    sitk.WriteImage(sitk.Cast(sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 900, array.shape)), sitk.sitkInt16), str(tmp_path / "scan.nii.gz"))
    scan = sitk.ReadImage(str(tmp_path / "scan.nii.gz"))
    scan.CopyInformation(image)
    sitk.WriteImage(scan, str(tmp_path / "scan.nii.gz"))
    assert main(["export-training", str(tmp_path / "scan.nii.gz"), str(tmp_path / "edited.seg.nrrd"), "-o", str(tmp_path / "ds"),
                 "--original", str(tmp_path / "model.seg.nrrd")]) == 0  # fmt: skip
    assert "(edited: L4-L5)" in capsys.readouterr().out
    # painted over L4, the disc goes to a second layer of the file: the overlap is refused in one line
    _edit_in_slicer(harness, tmp_path / "model.seg.nrrd", tmp_path / "overlap.seg.nrrd", row=0)
    with pytest.raises(InputError, match="segments 'L4' and 'L4-L5' overlap in 28 voxels"):
        imageio.read_label_map(tmp_path / "overlap.seg.nrrd", reference=reference)


def test_a_segment_named_outside_the_scheme_is_refused_in_one_line(tmp_path):
    from conftest import build_scene

    harness = build_scene()
    image, _ = _labels()
    imageio.write_image(image, tmp_path / "model.seg.nrrd")
    _edit_in_slicer(harness, tmp_path / "model.seg.nrrd", tmp_path / "edited.seg.nrrd", name="new disc")
    with pytest.raises(InputError, match=r"segment\(s\) 'new disc' are not named as a structure of the scheme"):
        imageio.read_label_map(tmp_path / "edited.seg.nrrd", reference=image)


def test_measure_reads_the_sample_segmentation_saved_by_slicer_like_its_label_map(tmp_path):
    """'measure IMAGE edited.seg.nrrd' refused Slicer's file (cropped to its segments) as 'on different grids'."""
    from conftest import build_scene

    harness = build_scene()
    import slicer  # noqa: F401

    root = Path(__file__).resolve().parents[2] / "Resources" / "Samples"
    image, labels = root / "MyoSegmenTUM_VB3_02_image.nii.gz", root / "MyoSegmenTUM_VB3_02_labels.nii.gz"
    imageio.write_image(imageio.read_label_map(labels), tmp_path / "labels.seg.nrrd")
    node = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(tmp_path / "labels.seg.nrrd"))
    assert storage.ReadData(node)
    storage.SetFileName(str(tmp_path / "saved.seg.nrrd"))
    assert storage.WriteData(node)
    assert sitk.ReadImage(str(tmp_path / "saved.seg.nrrd")).GetSize() != sitk.ReadImage(str(image)).GetSize()  # cropped
    assert main(["measure", str(image), str(labels), "-o", str(tmp_path / "from-nifti")]) == 0
    assert main(["measure", str(image), str(tmp_path / "saved.seg.nrrd"), "-o", str(tmp_path / "from-slicer")]) == 0
    assert (tmp_path / "from-slicer" / "measurements.csv").read_bytes() == (tmp_path / "from-nifti" / "measurements.csv").read_bytes()
