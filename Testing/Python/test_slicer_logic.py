"""SpineAnalysisLogic on real MRML scenes (slicer-core): I/O, terminology, table, events, navigation, relabelling,
segmentation runs, dependencies."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineAnalysisLib import labels as scheme
from SpineAnalysisLib.errors import InputError


@pytest.fixture
def loaded(logic, phantom):
    volume, segmentation = logic.loadInputs(phantom[0], phantom[1])
    return volume, segmentation


def _names(segmentation):
    s = segmentation.GetSegmentation()
    return [s.GetNthSegment(i).GetName() for i in range(s.GetNumberOfSegments())]


def _segment(logic, segmentation, name):
    return segmentation.GetSegmentation().GetSegment(logic.segmentIdByName(segmentation, name))


def _type_code(segment):
    import slicer

    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
    return entry.GetTypeObject().GetCodeValue(), entry.GetCategoryObject().GetCodeValue(), entry.GetTerminologyContextName()


def _needs_measurements():
    if importlib.util.find_spec("SpineAnalysisLib.measurements") is None:
        pytest.skip("SpineAnalysisLib.measurements is not there yet")


# ----------------------------------------------------------------------------------------------------
# volumes <-> SimpleITK
# ----------------------------------------------------------------------------------------------------
def _oblique_image():
    rotation = sitk.VersorTransform((0.3, -0.2, 0.9), 0.4).GetMatrix()
    image = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))  # (k, j, i)
    image.SetSpacing((0.7, 1.3, 4.0))
    image.SetOrigin((12.5, -30.0, 101.0))
    image.SetDirection(rotation)
    return image


def test_volume_node_to_sitk_keeps_voxels_and_lps_geometry(logic, slicer_scene, tmp_path):
    import slicer
    import vtk

    image = _oblique_image()
    path = str(tmp_path / "oblique.nrrd")
    sitk.WriteImage(image, path)
    node = slicer_scene.volumes.AddArchetypeVolume(path, "oblique", 0)  # read by Slicer's own reader
    back = logic.volumeNodeToSitk(node)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    # Slicer's IJK->RAS is ITK's index->LPS with the first two rows negated
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    from SpineAnalysisLib.imageio import index_to_lps_matrix

    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(ijk_to_ras), np.diag([-1, -1, 1, 1]) @ index_to_lps_matrix(image), atol=1e-4)


def test_sitk_to_volume_node_round_trip_and_linear_transform(logic, slicer_scene):
    import slicer

    image = _oblique_image()
    node = logic.sitkToVolumeNode(image, name="made")
    assert node.GetClassName() == "vtkMRMLScalarVolumeNode" and node.GetName() == "made"
    back = logic.volumeNodeToSitk(node)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-9)
    label_node = logic.sitkToVolumeNode(sitk.Cast(image > 50, sitk.sitkUInt8), labelmap=True)
    assert label_node.IsA("vtkMRMLLabelMapVolumeNode")
    # a linear parent transform moves the geometry: translation by 10 mm to the right (RAS) = -10 in LPS x
    transform = slicer_scene.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(np.array([[1, 0, 0, 10], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])))
    node.SetAndObserveTransformNodeID(transform.GetID())
    moved = logic.volumeNodeToSitk(node)
    np.testing.assert_allclose(np.subtract(moved.GetOrigin(), image.GetOrigin()), (-10, 0, 0), atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# loading, names, colours, terminology
# ----------------------------------------------------------------------------------------------------
def test_load_inputs_names_colours_terminology_and_hierarchy(logic, loaded, slicer_scene):
    import slicer

    volume, segmentation = loaded
    assert volume.GetName() == "image"
    assert _names(segmentation) == ["L3", "L3-L4", "L4", "L4-L5", "L5"]  # cranial to caudal
    for name in _names(segmentation):
        label = scheme.label_from_name(name)
        segment = _segment(logic, segmentation, name)
        np.testing.assert_allclose(segment.GetColor(), scheme.structure_color(label), atol=1e-6)
        code, category, context = _type_code(segment)
        assert code == scheme.structure(label).snomed_code
        assert category == "123037004"
        assert context == "Segmentation category and type - SpineAnalysis"  # the module's own context
    assert _type_code(_segment(logic, segmentation, "L4"))[0] == "11994002"
    assert _type_code(_segment(logic, segmentation, "L4-L5"))[0] == "84020006"
    # reference geometry = the input volume (needed for DICOM SEG export); same subject hierarchy folder
    assert segmentation.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) is volume
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer_scene.scene)
    assert sh.GetItemParent(sh.GetItemByDataNode(segmentation)) == sh.GetItemParent(sh.GetItemByDataNode(volume))
    # no temporary label map node is left behind; one scheme colour table per scene
    assert slicer_scene.scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0
    assert logic.getColorTableNode() is logic.getColorTableNode()
    table = logic.getColorTableNode()
    assert table.GetColorName(123) == "L4-L5" and table.GetColorName(60) == "spinal cord"


def test_segmentation_to_label_array_round_trip(logic, loaded, phantom):
    volume, segmentation = loaded
    original = sitk.GetArrayFromImage(sitk.ReadImage(phantom[1]))
    # a segment that is not part of the scheme is ignored
    segmentation.GetSegmentation().AddEmptySegment("", "my notes")
    array = logic.segmentationToLabelArray(segmentation, volume)
    assert array.dtype == np.uint16
    np.testing.assert_array_equal(array, original)
    label_map = logic.segmentationToLabelMap(segmentation, volume)
    assert label_map.GetSize() == sitk.ReadImage(phantom[0]).GetSize()


def test_labels_outside_the_scheme_are_refused(logic, slicer_scene, phantom, tmp_path):
    labels = sitk.ReadImage(phantom[1])
    array = sitk.GetArrayFromImage(labels)
    array[array == 22] = 77
    bad = sitk.GetImageFromArray(array)
    bad.CopyInformation(labels)
    path = str(tmp_path / "bad.nii.gz")
    sitk.WriteImage(bad, path)
    with pytest.raises(InputError, match="77"):
        logic.loadInputs(phantom[0], path)
    with pytest.raises(InputError, match="no such file"):
        logic.loadInputs(str(tmp_path / "missing.nii.gz"))


def test_seg_nrrd_round_trip_keeps_names_and_terminology(logic, loaded, phantom, tmp_path):
    _volume, segmentation = loaded
    logic.shiftLevels(segmentation, +1)
    path = logic.saveSegmentation(segmentation, str(tmp_path / "out" / "case"))
    assert path.endswith("case.seg.nrrd") and os.path.isfile(path)
    _volume2, segmentation2 = logic.loadInputs(phantom[0], path)
    assert _names(segmentation2) == ["L4", "L4-L5", "L5", "L5-S1", "S1"]
    assert _type_code(_segment(logic, segmentation2, "S1"))[0] == "65985001"


# ----------------------------------------------------------------------------------------------------
# measurement table and edit events
# ----------------------------------------------------------------------------------------------------
def test_flags_of_values(spine_module):
    SpineAnalysisLogic = spine_module.SpineAnalysisLogic

    # the library's one rule (measure/flags.py): disc z-scores flag on the low side only, beyond 1.96
    # a Genant grade has its own column: the CSV, report.png and the HTML reports do not flag it either
    assert SpineAnalysisLogic.flagsOf({"dhi_z": -2.46, "hdr_z": 1.9, "delta_si_z": None, "genant_grade": 1.0}) == "dhi low, z=-2.5"
    assert SpineAnalysisLogic.flagsOf({"dhi_z": 2.5, "genant_grade": 0.0, "height_mean_mm": 9.0}) == ""


def test_labels_to_remeasure(spine_module):
    SpineAnalysisLogic = spine_module.SpineAnalysisLogic

    assert SpineAnalysisLogic.labelsToRemeasure({123, 122}) == {122, 123}  # discs: just them
    assert SpineAnalysisLogic.labelsToRemeasure({122}, {20, 120, 121, 122, 123, 124, 22}) == {121, 122, 123}  # and their neighbours
    assert SpineAnalysisLogic.labelsToRemeasure({123, 23}) is None  # a vertebra: everything (spine angles)


def test_table_columns_units_and_flags(logic, loaded):
    _needs_measurements()
    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume, sex="female", age=45)
    columns = [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())]
    assert columns[:2] == ["Structure", "Type"] and columns[-2:] == ["Outside normal range", "Notes"]
    assert {"height_mean_mm", "dhi", "dhi_z", "genant_grade", "wedge_ratio"} <= set(columns)
    assert table.GetColumnUnitLabel("height_mean_mm") == "mm"
    rows = [table.GetCellText(r, 0) for r in range(table.GetNumberOfRows())]
    assert rows[:5] == ["L3", "L3-L4", "L4", "L4-L5", "L5"]  # anatomical order, spine rows after
    assert all(table.GetCellText(r, 1) == "spine" for r in range(5, len(rows)))
    assert logic.tableValue(table, "L4", "height_anterior_mm") == pytest.approx(25.0, abs=1.0)
    assert logic.structureNameOfRow(table, 3) == "L4-L5"
    # the flag column repeats what the z-scores and grades say
    flag_column = columns.index("Outside normal range")
    for r, name in enumerate(rows):
        values = {p: logic.tableValue(table, name, p) for p in ("dhi_z", "hdr_z", "delta_si_z", "genant_grade")}
        assert table.GetCellText(r, flag_column) == logic.flagsOf(values)


def test_edit_event_marks_only_the_edited_disc_and_recompute_updates_its_row(logic, loaded):
    _needs_measurements()
    import slicer

    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    before = {m.level + "/" + m.parameter: m for m in logic.measurementsOfTable(table)}
    calls = []
    logic.pendingChangedCallback = lambda: calls.append(1)
    logic.observeSegmentation(segmentation, volume, table)
    disc_id = logic.segmentIdByName(segmentation, "L3-L4")
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, disc_id, volume)
    mask[:, :, np.nonzero(mask.any(axis=(0, 1)))[0][:2]] = 0  # 2 slices of 0.5 mm at one end
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, disc_id, volume)
    assert logic.pendingLabels == {scheme.label_from_name("L3-L4")} and not logic.fullRecomputePending
    assert calls, "the widget's debounce timer was not notified"
    assert logic.recomputeDirty() is table
    assert logic.pendingLabels == set() and logic.recomputeDirty() is None  # nothing left to do
    after = {m.level + "/" + m.parameter: m for m in logic.measurementsOfTable(table)}
    assert set(after) == set(before)
    changed = {key for key in after if after[key] is not before[key]}
    # the edited disc and its neighbouring disc (Pfirrmann's height against its neighbours) measured again, with
    # the neighbour's values unchanged; the other rows kept as they were
    assert changed and all(key.startswith(("L3-L4/", "L4-L5/")) for key in changed)
    assert all(after[key].value == before[key].value for key in changed if key.startswith("L4-L5/") and "pfirrmann" not in key)
    assert logic.tableValue(table, "L3-L4", "height_mean_mm") == pytest.approx(10.0 - 2 * 0.5, abs=0.5)


def test_an_edit_re_measures_without_detecting_the_modality_again_a_new_volume_detects_it(logic, loaded, phantom, monkeypatch):
    _needs_measurements()
    import slicer

    from SpineAnalysisLib import modality

    detect, seen = modality.detect, []
    monkeypatch.setattr(modality, "detect", lambda image, array=None: seen.append(image.GetSize()) or detect(image, array))
    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    assert len(seen) == 1
    logic.observeSegmentation(segmentation, volume, table)
    disc_id = logic.segmentIdByName(segmentation, "L3-L4")
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, disc_id, volume)
    mask[:, :, np.nonzero(mask.any(axis=(0, 1)))[0][:2]] = 0
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, disc_id, volume)
    before = logic.tableValue(table, "L3-L4", "height_mean_mm")
    assert logic.recomputeDirty() is table and logic.tableValue(table, "L3-L4", "height_mean_mm") < before  # re-measured
    assert len(seen) == 1  # ... on the modality found before the edit
    logic.stopObserving()
    voxels = slicer.util.arrayFromVolume(volume)
    voxels[0, 0, 0] += 1
    slicer.util.arrayFromVolumeModified(volume)  # the volume's voxels changed: detected again
    logic.updateTable(segmentation, volume, table)
    assert len(seen) == 2
    other, otherSegmentation = logic.loadInputs(phantom[0], phantom[1])  # a new volume: detected for it
    logic.updateTable(otherSegmentation, other)
    assert len(seen) == 3


def test_changes_without_voxel_edits_are_not_re_measured(logic, loaded):
    """Colour changes and 3D surfaces fire SegmentModified/RepresentationModified but change no voxels."""
    volume, segmentation = loaded
    logic.observeSegmentation(segmentation, volume)
    _segment(logic, segmentation, "L4").SetColor(0.1, 0.2, 0.3)
    logic.show3D(segmentation)
    assert logic.pendingLabels == set() and not logic.fullRecomputePending
    logic.stopObserving()


def test_overwriting_a_neighbour_marks_both(logic, loaded):
    """Growing the L4-L5 disc into L4 with the Segment Editor's overwrite mode changes L4 too."""
    import slicer

    volume, segmentation = loaded
    logic.observeSegmentation(segmentation, volume)
    disc = logic.segmentIdByName(segmentation, "L4-L5")
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, disc, volume)
    top = np.nonzero(mask.any(axis=(0, 1)))[0].min()  # most superior slice (i runs inferiorly)
    mask[:, :, top - 4 : top] = mask[:, :, top : top + 4]
    labelmap = slicer.util.addVolumeFromArray(mask.astype(np.uint8), nodeClassName="vtkMRMLLabelMapVolumeNode")
    labelmap.CopyOrientation(volume)
    grown = slicer.modules.segmentations.logic().CreateOrientedImageDataFromVolumeNode(labelmap)
    others = [sid for sid in logic.segmentIds(segmentation) if sid != disc]  # "overwrite other segments: all"
    slicer.modules.segmentations.logic().SetBinaryLabelmapToSegment(
        grown, segmentation, disc, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE, grown.GetExtent(), False, others
    )
    l4 = logic.segmentIdByName(segmentation, "L4")
    assert slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, l4, volume).sum() < 30800  # L4 lost voxels
    assert logic.pendingLabels == {scheme.label_from_name("L4-L5"), scheme.label_from_name("L4")}
    logic.stopObserving()


def test_vertebra_edit_and_user_rename_trigger_a_full_recompute(logic, loaded):
    _needs_measurements()
    import slicer

    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    logic.observeSegmentation(segmentation, volume, table)
    l5 = logic.segmentIdByName(segmentation, "L5")
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, l5, volume)
    mask[:, :30, :] = 0  # remove the anterior part of L5
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, l5, volume)
    assert scheme.label_from_name("L5") in logic.pendingLabels
    logic.recomputeDirty()
    segmentation.GetSegmentation().GetSegment(l5).SetName("S1")  # renamed in the Segment Editor
    assert logic.fullRecomputePending
    assert _type_code(segmentation.GetSegmentation().GetSegment(l5))[0] == "65985001"  # terminology follows
    logic.recomputeDirty()
    rows = [table.GetCellText(r, 0) for r in range(table.GetNumberOfRows())]
    assert "S1" in rows and "L5" not in rows and "L4-L5" in rows
    segmentation.GetSegmentation().RemoveSegment(logic.segmentIdByName(segmentation, "L3"))
    assert logic.fullRecomputePending
    logic.recomputeDirty()
    assert "L3" not in [table.GetCellText(r, 0) for r in range(table.GetNumberOfRows())]
    logic.stopObserving()
    assert logic.pendingLabels == set()


def test_export_measurements_writes_csv_and_json(logic, loaded, tmp_path):
    _needs_measurements()
    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    csv_path, json_path = logic.exportMeasurements(table, str(tmp_path / "results"), volume)
    assert os.path.isfile(csv_path) and os.path.isfile(json_path) and os.path.basename(csv_path) == "image_measurements.csv"
    assert "L4-L5" in open(csv_path, encoding="utf-8").read()
    with pytest.raises(InputError):  # nothing measured: nothing to export
        logic.exportMeasurements(None, str(tmp_path))


# ----------------------------------------------------------------------------------------------------
# navigation
# ----------------------------------------------------------------------------------------------------
def test_level_centroid_and_jump_to_level(logic, loaded, phantom, slicer_scene):
    import slicer

    volume, segmentation = loaded
    labels = sitk.ReadImage(phantom[1])
    array = sitk.GetArrayFromImage(labels)
    for name in ("L3", "L4-L5", "L5"):
        k, j, i = np.nonzero(array == scheme.label_from_name(name))
        centre_index = [float(i.min() + i.max()) / 2, float(j.min() + j.max()) / 2, float(k.min() + k.max()) / 2]
        lps = labels.TransformContinuousIndexToPhysicalPoint(centre_index)
        expected = (-lps[0], -lps[1], lps[2])
        # Slicer's segment centre is the voxel nearest the centre of mass (so it lies inside the segment):
        # within one voxel of the box centre on each axis (R: 3 mm slices, A: 0.8 mm, S: 0.5 mm)
        actual = logic.levelCentroidRAS(segmentation, name)
        assert np.all(np.abs(np.subtract(actual, expected)) <= (3.0, 0.8, 0.5)), (name, actual, expected)
    superior, inferior = phantom[2]["L4"]
    assert logic.levelCentroidRAS(segmentation, "L4")[2] == pytest.approx((superior + inferior) / 2, abs=0.5)
    # a slice view follows
    slice_node = slicer_scene.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    slice_node.SetLayoutName("Red")
    slice_node.SetOrientationToAxial()
    target = logic.jumpToLevel(segmentation, "L4-L5")
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(slice_node.GetSliceToRAS())[:3, 3], target, atol=1e-6)
    with pytest.raises(InputError):
        logic.levelCentroidRAS(segmentation, "T12")


# ----------------------------------------------------------------------------------------------------
# relabelling
# ----------------------------------------------------------------------------------------------------
def test_shift_levels_renames_discs_colours_and_terminology(logic, loaded):
    _volume, segmentation = loaded
    assert logic.shiftLevels(segmentation, -1) == {"L3": "L2", "L4": "L3", "L5": "L4", "L3-L4": "L2-L3", "L4-L5": "L3-L4"}
    assert _names(segmentation) == ["L2", "L2-L3", "L3", "L3-L4", "L4"]
    for name in _names(segmentation):
        segment = _segment(logic, segmentation, name)
        label = scheme.label_from_name(name)
        assert _type_code(segment)[0] == scheme.structure(label).snomed_code
        np.testing.assert_allclose(segment.GetColor(), scheme.structure_color(label), atol=1e-6)
    logic.shiftLevels(segmentation, +2)
    assert _names(segmentation) == ["L4", "L4-L5", "L5", "L5-S1", "S1"]
    with pytest.raises(ValueError, match="S1"):
        logic.shiftLevels(segmentation, +1)  # nothing below the sacrum
    assert _names(segmentation) == ["L4", "L4-L5", "L5", "L5-S1", "S1"]  # unchanged after a refusal


def test_shift_keeps_voxels_with_their_segments(logic, loaded, phantom):
    volume, segmentation = loaded
    original = sitk.GetArrayFromImage(sitk.ReadImage(phantom[1]))
    logic.shiftLevels(segmentation, +1)
    shifted = logic.segmentationToLabelArray(segmentation, volume)
    mapping = {22: 23, 23: 24, 24: 26, 122: 123, 123: 124, 0: 0}
    np.testing.assert_array_equal(shifted, np.vectorize(mapping.get)(original))


def test_rename_vertebra_transitional_and_refusals(logic, loaded):
    _volume, segmentation = loaded
    logic.shiftLevels(segmentation, +1)  # L4, L5, S1
    assert logic.renameVertebra(segmentation, "S1", "L6") == {"S1": "L6", "L5-S1": "L5-L6"}
    assert _type_code(_segment(logic, segmentation, "L6"))[0] == "51282000"
    assert _type_code(_segment(logic, segmentation, "L5-L6"))[0] == "360499006"
    with pytest.raises(ValueError, match="L5"):
        logic.renameVertebra(segmentation, "L4", "L5")  # two L5
    with pytest.raises(ValueError, match="not neighbours"):
        logic.renameVertebra(segmentation, "L5", "L2")  # disc L4-L5 would become L4-L2
    with pytest.raises(ValueError):
        logic.renameVertebra(segmentation, "L4", "L4-L5")  # not a vertebra
    with pytest.raises(ValueError, match="no vertebra"):
        logic.renameVertebra(segmentation, "T12", "L1")
    assert _names(segmentation) == ["L4", "L4-L5", "L5", "L5-L6", "L6"]


# ----------------------------------------------------------------------------------------------------
# running the model
# ----------------------------------------------------------------------------------------------------
_FAKE_WORKER = """
import sys, time
import SimpleITK as sitk
image_path, output_path, labels_path, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
print("progress: 0.05 loading model fake on cpu", flush=True)
image = sitk.ReadImage(image_path)
for i in range(1, 4):
    time.sleep(delay)
    print(f"progress: {0.05 + 0.3 * i:.2f} segmenting", flush=True)
labels = sitk.ReadImage(labels_path)
labels.CopyInformation(image)
sitk.WriteImage(labels, output_path)
print("progress: 1.0 done", flush=True)
"""


def _fake_command(tmp_path, phantom, delay):
    worker = tmp_path / "fake_worker.py"
    worker.write_text(textwrap.dedent(_FAKE_WORKER), encoding="utf-8")
    return [sys.executable, str(worker), "{input}", "{output}", phantom[1], str(delay)]


def test_background_segmentation_job_loads_the_result(logic, slicer_scene, phantom, tmp_path):
    volume, _ = logic.loadInputs(phantom[0])
    job = logic.startSegmentation(volume, command=_fake_command(tmp_path, phantom, 0.05))
    assert os.path.isfile(os.path.join(job.workDir, "input.nii.gz"))
    fractions = []
    deadline = time.monotonic() + 60
    while job.is_running and time.monotonic() < deadline:
        fractions += [e.fraction for e in job.poll() if e.is_progress]
        time.sleep(0.05)
    fractions += [e.fraction for e in job.poll() if e.is_progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 3
    assert job.succeeded
    segmentation = logic.finishSegmentation(job)
    assert _names(segmentation) == ["L3", "L3-L4", "L4", "L4-L5", "L5"]
    assert not os.path.exists(job.workDir)  # temporary files removed


def test_background_segmentation_cancel(logic, slicer_scene, phantom, tmp_path):
    from SpineAnalysisLib.errors import SpineAnalysisError

    volume, _ = logic.loadInputs(phantom[0])
    job = logic.startSegmentation(volume, command=_fake_command(tmp_path, phantom, 30))
    deadline = time.monotonic() + 30
    while not any(e.is_progress for e in job.poll()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = job.process.pid
    job.cancel()
    from SpineAnalysisLib.background import pid_exists

    assert not job.is_running and not job.succeeded and not pid_exists(pid)
    assert not os.path.exists(job.workDir)
    assert "cancelled" in job.failureMessage()
    with pytest.raises(SpineAnalysisError, match="cancelled"):
        logic.finishSegmentation(job)


def test_default_background_command(logic, spine_module):
    command = logic.segmentationCommand("in.nii.gz", "out.nii.gz", None, "cpu")
    assert command == [sys.executable, "-m", "SpineAnalysisLib", "segment", "in.nii.gz", "-o", "out.nii.gz", "--device", "cpu", "--progress"]
    assert logic.segmentationCommand("in.nii.gz", "out.nii.gz", None, "cpu", "r.json")[-2:] == ["--summary", "r.json"]
    assert logic.segmentationCommand("a", "b", "spine@2", "auto")[-2:] == ["--model", "spine@2"]


def test_background_job_with_the_real_command_line_reports_its_error(logic, slicer_scene, phantom):
    """The default command (python -m SpineAnalysisLib segment ... --progress) is accepted by the CLI; an unknown
    model makes it fail fast, and the CLI's one-line reason reaches the user."""
    from SpineAnalysisLib.errors import SpineAnalysisError

    volume, _ = logic.loadInputs(phantom[0])
    job = logic.startSegmentation(volume, model="no-such-model-for-tests", device="cpu")
    assert job.process.args[1:4] == ["-m", "SpineAnalysisLib", "segment"] and "--progress" in job.process.args
    job.wait(120)
    assert not job.succeeded and job.process.returncode not in (0, None)
    message = job.failureMessage()
    assert "no-such-model-for-tests" in message and "usage:" not in message  # a model error, not an argparse error
    with pytest.raises(SpineAnalysisError):
        logic.finishSegmentation(job)
    assert not os.path.exists(job.workDir)


def test_synchronous_segmentation_plumbing(logic, slicer_scene, phantom, monkeypatch):
    """runSegmentation(synchronous=True) with a stand-in for SpineAnalysisLib.inference (no torch needed)."""
    volume, _ = logic.loadInputs(phantom[0])
    calls = {}

    def segment_image(image, model_name=None, device="auto", progress=None):
        calls.update(model=model_name, device=device, size=image.GetSize())
        progress(0.5, "segmenting")
        labels = sitk.ReadImage(phantom[1])
        labels.CopyInformation(image)
        return types.SimpleNamespace(label_map=labels)

    monkeypatch.setitem(sys.modules, "SpineAnalysisLib.inference", types.SimpleNamespace(segment_image=segment_image))
    seen = []
    segmentation = logic.runSegmentation(volume, "default", "cpu", synchronous=True, progressCallback=lambda f, m: seen.append((f, m)))
    assert calls == {"model": None, "device": "cpu", "size": sitk.ReadImage(phantom[0]).GetSize()}
    assert seen == [(0.5, "segmenting")]
    assert _names(segmentation) == ["L3", "L3-L4", "L4", "L4-L5", "L5"]
    # running again makes a second segmentation node; the first is kept as it was
    again = logic.runSegmentation(volume, "default", "cpu", synchronous=True)
    assert again is not segmentation and _names(again) == _names(segmentation) == ["L3", "L3-L4", "L4", "L4-L5", "L5"]


def test_real_inference_synchronous_on_a_small_real_crop(logic, slicer_scene, tmp_path):
    """The shipped model, run synchronously by the Logic, names lumbar segments in order."""
    import SimpleITK as sitk

    sample = Path(__file__).resolve().parents[2] / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_image.nii.gz"
    crop = tmp_path / "crop.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(sample))[:, :, 24:40], str(crop))
    volume, _ = logic.loadInputs(str(crop))
    segmentation = logic.runSegmentation(volume, None, "cpu")
    names = _names(segmentation)
    assert {"L2", "L3", "L4"} <= set(names), names


def test_ensure_dependencies_never_installs_outside_the_app_or_in_testing(logic, spine_module, monkeypatch):
    import slicer

    installs = []
    monkeypatch.setattr(slicer.util, "pip_install", lambda r: installs.append(r), raising=False)
    assert logic.ensureDependencies(requirements=("numpy",)) is True  # importable: nothing to do
    assert logic.ensureDependencies(requirements=("no_such_package_for_tests>=1",)) is False  # no slicer.app here
    app = types.SimpleNamespace(commandOptions=lambda: types.SimpleNamespace(testingEnabled=True))
    monkeypatch.setattr(slicer, "app", app, raising=False)
    assert logic.ensureDependencies(askConfirmation=False, requirements=("no_such_package_for_tests>=1",)) is False  # --testing
    assert installs == []


def test_missing_dependencies_reports_importable_packages(spine_module):
    missing = spine_module.SpineAnalysisLogic.missingDependencies()
    for requirement in missing:
        name = requirement.split(">")[0]
        assert importlib.util.find_spec(name) is None


def test_show_3d_creates_surfaces(logic, loaded):
    _volume, segmentation = loaded
    logic.show3D(segmentation)
    assert segmentation.GetSegmentation().ContainsRepresentation("Closed surface")


# ----------------------------------------------------------------------------------------------------
# terminology codes
# ----------------------------------------------------------------------------------------------------
#: DICOM PS3.16 CID 7603 "Vertebra" (SNOMED CT), C1 ... L5.
CID_7603 = (
    "14806007 39976000 113205007 5329002 36978003 36054005 87391001 64864005 53733008 1626008 73071006 56401006 "
    "45296009 62487009 11068009 82687006 7610001 12989004 23215003 66794005 14293000 36470004 11994002 49668003"
).split()


def _verhoeff_ok(code: str) -> bool:
    """SNOMED CT identifiers end with a Verhoeff check digit."""
    d = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
         [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
         [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
         [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]  # fmt: skip
    p = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
         [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
         [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8]]  # fmt: skip
    check = 0
    for position, digit in enumerate(reversed(code)):
        check = d[check][p[position % 8][int(digit)]]
    return check == 0


def test_terminology_codes_are_valid_and_match_dicom(spine_module, slicer_scene):
    assert _verhoeff_ok("12989004") and not _verhoeff_ok("12989008")  # the checker itself
    lumbar_and_above = [label for label in scheme.ANATOMICAL_ORDER if label <= 24]
    assert [scheme.structure(label).snomed_code for label in lumbar_and_above] == CID_7603
    logic = spine_module.SpineAnalysisLogic()
    for label in scheme.all_labels():
        code = scheme.structure(label).snomed_code
        assert code.isdigit() and _verhoeff_ok(code), (label, code)
        assert f"^{code}^" in logic.terminologyEntry(label)
