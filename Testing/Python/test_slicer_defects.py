"""Regression tests of the nine defects of issue #26, on real MRML scenes (slicer-core) where it runs them.

Qt-only behaviour (dialogs, cursors) is reached through the one Logic/package call the widget makes; what was
checked against Slicer's own source is said in the docstrings of SpineAnalysisSlicer.feedback / .dependencies /
.dicomsource / .compat.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineAnalysisLib.errors import InputError, SpineAnalysisError

MODULE_FILE = Path(__file__).resolve().parents[2] / "SpineAnalysis" / "SpineAnalysis.py"


@pytest.fixture
def loaded(logic, phantom):
    return logic.loadInputs(phantom[0], phantom[1])


def _names(segmentation):
    s = segmentation.GetSegmentation()
    return [s.GetNthSegment(i).GetName() for i in range(s.GetNumberOfSegments())]


def _fake_model(monkeypatch, phantom):
    def segment_image(image, model_name=None, device="auto", progress=None):
        labels = sitk.ReadImage(phantom[1])
        labels.CopyInformation(image)
        return types.SimpleNamespace(label_map=labels, model="stand-in 1.0")

    monkeypatch.setitem(sys.modules, "SpineAnalysisLib.inference", types.SimpleNamespace(segment_image=segment_image))


# 1 ---------------------------------------------------------------------------------------------------
def test_1_export_after_closing_the_scene_never_writes_the_previous_case(logic, loaded, slicer_scene, tmp_path):
    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    old_id = table.GetID()
    slicer_scene.scene.Clear(0)  # File > Close Scene
    new_table = slicer_scene.scene.AddNewNodeByClass("vtkMRMLTableNode")
    assert new_table.GetID() == old_id  # the premise: the new scene hands out the same ID
    with pytest.raises(InputError, match="no measurements"):
        logic.exportMeasurements(new_table, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_1_export_writes_what_the_table_shows_after_an_edit(logic, loaded, tmp_path):
    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    rows = [table.GetTable().GetColumnByName("Structure").GetValue(r) for r in range(table.GetNumberOfRows())]
    table.GetTable().GetColumnByName("height_mean_mm").SetValue(rows.index("L4-L5"), 12.5)  # the user edits a cell
    csv_path, _ = logic.exportMeasurements(table, str(tmp_path), volume)
    row = [r for r in csv.DictReader(open(csv_path, encoding="utf-8")) if r["level"] == "L4-L5" and r["parameter"] == "height_mean_mm"]
    assert float(row[0]["value"]) == 12.5 and "edited in the table" in row[0]["note"]


# 2 ---------------------------------------------------------------------------------------------------
class _Slicer58Segment:
    """A real vtkSegment seen through Slicer 5.8's API: no GetTerminology/SetTerminology (added in 5.10)."""

    def __init__(self, segment):
        self._segment = segment

    def __getattr__(self, name):
        if name in ("GetTerminology", "SetTerminology", "HasTerminology"):
            raise AttributeError(name)
        return getattr(self._segment, name)


def test_2_terminology_is_read_without_the_5_10_api(logic, loaded, spine_module):
    _volume, segmentation = loaded
    segment = segmentation.GetSegmentation().GetSegment(logic.segmentIdByName(segmentation, "L4"))
    old = _Slicer58Segment(segment)
    with pytest.raises(AttributeError):
        old.GetTerminology()
    assert "^11994002^" in spine_module.compat.segmentTerminology(old)
    assert spine_module.compat.segmentTerminology(old) == segment.GetTerminology()


def test_2_the_module_calls_segment_terminology_only_through_compat():
    calls = [node.func.attr for node in ast.walk(ast.parse(MODULE_FILE.read_text(encoding="utf-8")))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)]  # fmt: skip
    assert "GetTerminology" not in calls and "SetTerminology" not in calls[:0]  # colour tables' SetTerminology is guarded


# 3 ---------------------------------------------------------------------------------------------------
def test_3_segmenting_again_keeps_the_corrected_segmentation(logic, phantom, monkeypatch):
    import slicer

    _fake_model(monkeypatch, phantom)
    volume, _ = logic.loadInputs(phantom[0])
    first = logic.runSegmentation(volume, "default", "cpu")
    l4 = logic.segmentIdByName(first, "L4")
    corrected = slicer.util.arrayFromSegmentBinaryLabelmap(first, l4, volume)
    corrected[:, :, : corrected.shape[2] // 2] = 0  # the user's correction
    slicer.util.updateSegmentBinaryLabelmapFromArray(corrected, first, l4, volume)
    assert logic.segmentationsOfVolume(volume) == [first]
    second = logic.runSegmentation(volume, "default", "cpu")
    assert second is not first and second.GetName() != first.GetName()
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(first, l4, volume), corrected)
    assert logic.segmentationsOfVolume(volume) == [first, second]


def test_3_another_volume_never_keeps_the_previous_volumes_segmentation_or_table(logic, loaded, phantom):
    volume, segmentation = loaded
    old_table = logic.updateTable(segmentation, volume)
    assert logic.segmentationForVolume(volume, segmentation) is segmentation
    assert logic.tableForSegmentation(segmentation, old_table) is old_table
    other, _ = logic.loadInputs(phantom[0])
    assert logic.segmentationForVolume(other, segmentation) is None
    again, own = logic.loadInputs(phantom[0], phantom[1])
    assert logic.segmentationForVolume(again, segmentation) is own
    assert logic.tableForSegmentation(own, old_table) is None  # the old case's table is not reused
    # re-scoring never measures one segmentation into another's table
    assert logic.rescoreIfSubjectChanged(own, again, old_table, sex="male", age=30) is False
    own_table = logic.updateTable(own, again)
    assert logic.tableForSegmentation(own, old_table) is own_table


def test_3_shift_and_rename_can_be_undone(logic, loaded, spine_module):
    _volume, segmentation = loaded
    before = _names(segmentation)
    logic.shiftLevels(segmentation, +1)
    logic.renameVertebra(segmentation, "S1", "L6")
    assert logic.vertebraNames(segmentation) == ["L4", "L5", "L6"]
    assert logic.undoRelabel(segmentation) == {"L6": "S1", "L5-L6": "L5-S1"}
    assert logic.undoRelabel(segmentation) == {"L4": "L3", "L5": "L4", "S1": "L5", "L4-L5": "L3-L4", "L5-S1": "L4-L5"}
    assert _names(segmentation) == before and not logic.canUndoRelabel(segmentation)
    l4 = segmentation.GetSegmentation().GetSegment(logic.segmentIdByName(segmentation, "L4"))
    assert "^11994002^" in spine_module.compat.segmentTerminology(l4)  # terminology follows the names back
    with pytest.raises(ValueError):
        logic.undoRelabel(segmentation)


# 4 ---------------------------------------------------------------------------------------------------
def test_4_one_dialog_per_failure_even_when_nested(spine_module):
    shown, cursor = [], []
    reporter = spine_module.feedback.ErrorReporter(
        display=lambda message, details: shown.append((message, list(cursor))),
        setWaitCursor=lambda: cursor.append("wait"),
        restoreCursor=lambda: cursor.pop(),
    )
    with reporter.action("Failed to load the files.", waitCursor=True):
        with reporter.action("Failed to measure.", waitCursor=True):
            raise InputError("the label map is empty")
    assert len(shown) == 1 and "the label map is empty" in shown[0][0]
    assert shown[0][1] == [] and cursor == []  # the wait cursor is off before the dialog and after the block


def test_4_a_failed_background_run_is_one_error_from_one_logic_call(logic, phantom, slicer_scene):
    volume, _ = logic.loadInputs(phantom[0])
    job = logic.startSegmentation(volume, command=[sys.executable, "-c", "import sys; print('model exploded'); sys.exit(3)"])
    job.wait(60)
    nodes = slicer_scene.scene.GetNumberOfNodes()
    with pytest.raises(SpineAnalysisError, match="exit status 3"):
        logic.completeSegmentation(job)
    assert slicer_scene.scene.GetNumberOfNodes() == nodes and not os.path.exists(job.workDir)


# 5 ---------------------------------------------------------------------------------------------------
def test_5_reload_and_test_reports_a_skip_not_a_failure(spine_module, slicer_scene, monkeypatch):
    monkeypatch.setitem(sys.modules, "SpineAnalysisLib.inference", None)  # torch not installed yet: import fails
    test = spine_module.SpineAnalysisTest()
    test.runTest()  # raised unittest.SkipTest ("Test failed" in Slicer) before the fix
    assert [name for name, _reason in test.skipped] == ["test_sample"]


# 6 ---------------------------------------------------------------------------------------------------
def test_6_shipped_terminology_context_matches_the_label_scheme(spine_module):
    terminology = spine_module.terminology
    with open(terminology.contextPath(), encoding="utf-8") as stream:
        assert json.load(stream) == terminology.contextDocument()


def test_6_the_library_serialises_entries_as_slicer_does(spine_module):
    import slicer
    from SpineAnalysisLib import labels, terminology

    for label in labels.all_labels():  # the web page writes these strings without Slicer's terminology logic
        structure = labels.structure(label)
        expected = slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
            terminology.CONTEXT_NAME, terminology.CATEGORY[1], terminology.CATEGORY[0], terminology.CATEGORY[2],
            structure.snomed_code, "SCT", structure.snomed_meaning, "", "", "", "", "", "", "", "", "", "",
        )  # fmt: skip
        assert spine_module.terminology.serializedEntry(label) == terminology.serialized_entry(label) == expected


def test_6_every_segment_resolves_in_the_loaded_context(logic, loaded, slicer_scene, spine_module):
    import slicer

    terminologies = slicer_scene.terminologies
    assert spine_module.terminology.isLoaded(terminologies)  # loaded by the Logic, as at start-up
    known = spine_module.terminology.typeCodesInContext(terminologies)
    _volume, segmentation = loaded
    logic.shiftLevels(segmentation, +1)
    logic.renameVertebra(segmentation, "S1", "L6")  # generic codes too (L6: "Vertebra", the L5-L6 disc)
    for segment_id in logic.segmentIds(segmentation):
        entry = slicer.vtkSlicerTerminologyEntry()
        segment = segmentation.GetSegmentation().GetSegment(segment_id)
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(spine_module.compat.segmentTerminology(segment), entry)
        assert entry.GetTerminologyContextName() == spine_module.terminology.CONTEXT_NAME
        assert (entry.GetCategoryObject().GetCodeValue(), entry.GetTypeObject().GetCodeValue()) in known, segment.GetName()


# 7 ---------------------------------------------------------------------------------------------------
def _pip_ensure_like_slicer_5_12(calls, decline=False):
    def pip_ensure(requirements, constraints=None, skip_packages=None, prompt_install=True, prompt_restart=True, requester=None,
                   skip_in_testing=True, show_progress=True):  # fmt: skip  (signature of Slicer 5.12's slicer.packaging.pip_ensure)
        calls.append({"requirements": [str(r) for r in requirements], "prompt_install": prompt_install, "requester": requester})
        if decline:
            raise RuntimeError("User declined installation")

    return pip_ensure


def test_7_install_asks_once_and_a_decline_is_no_error(spine_module):
    dependencies = spine_module.dependencies
    asked, calls = [], []
    ok = dependencies.ensure(["no_such_package_for_tests>=1"], confirm=lambda text: asked.append(text) or True, inApplication=True,
                             testing=False, pipEnsure=_pip_ensure_like_slicer_5_12(calls))  # fmt: skip
    assert len(asked) == 1 and calls == [{"requirements": ["no_such_package_for_tests>=1"], "prompt_install": False, "requester": "SpineAnalysis"}]
    assert ok is False  # still not importable (nothing was really installed)
    declined = dependencies.ensure(["no_such_package_for_tests"], confirm=lambda text: True, inApplication=True, testing=False,
                                   pipEnsure=_pip_ensure_like_slicer_5_12([], decline=True))  # fmt: skip
    assert declined is False  # no exception reaches the widget
    calls.clear()
    assert dependencies.ensure(["no_such_package_for_tests"], confirm=lambda text: False, inApplication=True, testing=False,
                               pipEnsure=_pip_ensure_like_slicer_5_12(calls)) is False and calls == []  # fmt: skip


# 8 ---------------------------------------------------------------------------------------------------
def test_8_dicom_seg_needs_highdicom_on_first_use(spine_module):
    assert any(r.startswith("highdicom") for r in spine_module.DICOM_SEG_REQUIREMENTS)
    assert spine_module.dependencies.missing(spine_module.DICOM_SEG_REQUIREMENTS) == ([] if _has("highdicom") else list(spine_module.DICOM_SEG_REQUIREMENTS))


def _has(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


class _DicomDatabase:
    """The one ctkDICOMDatabase call used (``fileForInstance``); ctkDICOMDatabase is Qt/CTK, not in slicer-core."""

    def __init__(self, folder):
        import pydicom

        self.files = {pydicom.dcmread(str(p), stop_before_pixels=True).SOPInstanceUID: str(p) for p in Path(folder).iterdir()}

    def fileForInstance(self, uid):
        return self.files.get(uid, "")


def test_8_dicom_seg_of_a_series_from_the_dicom_browser(logic, tmp_path, monkeypatch, spine_module):
    pytest.importorskip("highdicom")
    import pydicom
    from dicom_series import spine_phantom, write_mr_series
    from SpineAnalysisLib import imageio

    image_array, labels = spine_phantom()
    write_mr_series(tmp_path / "mr", image_array)
    database = _DicomDatabase(tmp_path / "mr")
    volume, _ = logic.loadInputs(str(tmp_path / "mr"))
    volume.RemoveAttribute(spine_module.DICOM_FOLDER_ATTRIBUTE)  # as the DICOM browser loads it: instance UIDs only
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(database.files))
    assert logic.hasDicomSource(volume)
    segmentation = logic.importLabelMap(imageio.label_map_like(labels, logic.volumeNodeToSitk(volume)), volume)
    path = logic.exportDicomSeg(segmentation, volume, str(tmp_path / "seg.dcm"), dicomDatabase=database)
    seg = pydicom.dcmread(path)
    assert {s.SegmentLabel for s in seg.SegmentSequence} == {"L3", "L3-L4", "L4", "L4-L5", "L5"}
    referenced = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert referenced == set(database.files)


# 9 ---------------------------------------------------------------------------------------------------
def test_9_z_scores_follow_a_change_of_sex_and_age(logic, loaded, monkeypatch):
    """Changing sex/age re-scores the table through the library (normative.score), without measuring again."""
    from SpineAnalysisLib.measure import normative

    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    measured = logic.measurementsOfTable(table)
    assert logic.rescoreIfSubjectChanged(segmentation, volume, table, sex="unknown", age=0) is False  # what it was scored for
    monkeypatch.setattr(logic, "measure", lambda *a, **k: pytest.fail("re-scoring must not measure again"))
    assert logic.rescoreIfSubjectChanged(segmentation, volume, table, sex="female", age=45) is True
    expected = {(m.level, m.parameter): m for m in normative.score(measured, "F", 45.0) if m.parameter.endswith("_z")}
    shown = {(m.level, m.parameter): m for m in logic.measurementsOfTable(table) if m.parameter.endswith("_z")}
    assert expected and shown == expected  # values, notes, references and flags as the library scores them
    assert logic.rescoreIfSubjectChanged(segmentation, volume, table, sex="female", age=45) is False


def test_9_export_names_image_and_model_and_never_overwrites_silently(logic, phantom, monkeypatch, tmp_path):
    _fake_model(monkeypatch, phantom)
    volume, _ = logic.loadInputs(phantom[0])
    segmentation = logic.runSegmentation(volume, "default", "cpu")
    table = logic.updateTable(segmentation, volume)
    csv_path, json_path = logic.exportMeasurements(table, str(tmp_path), volume)
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    assert {(r["image"], r["model"]) for r in rows} == {("image", "stand-in 1.0")}
    with pytest.raises(FileExistsError):
        logic.exportMeasurements(table, str(tmp_path), volume)
    assert logic.exportMeasurements(table, str(tmp_path), volume, overwrite=True)[0] == csv_path


def test_9_modality_of_a_dicom_browser_volume_comes_from_the_subject_hierarchy(logic, loaded, slicer_scene):
    import slicer

    volume, _ = loaded
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer_scene.scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "patient")
    study = sh.CreateStudyItem(patient, "study")
    series = sh.GetItemByDataNode(volume) or sh.CreateItem(study, volume)  # as DICOMScalarVolumePlugin places it
    sh.SetItemParent(series, study)
    sh.SetItemAttribute(series, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName(), "MR")
    sh.SetItemUID(series, "DICOM", "1.2.3")
    assert logic.dicomIdentifiers(volume)["Modality"] == "MR"
    assert logic.dicomIdentifiers(volume)["SeriesInstanceUID"] == "1.2.3"


def test_9_no_dead_import_fallback_and_version_guard(spine_module):
    text = MODULE_FILE.read_text(encoding="utf-8")
    assert "vtkSlicerSegmentationsModuleMRMLPython" not in text
    assert spine_module.compat.unsupportedVersionMessage("5.6.2").startswith("SpineAnalysis needs 3D Slicer 5.8")
    assert spine_module.compat.unsupportedVersionMessage("5.8.1") is None
    assert spine_module.compat.unsupportedVersionMessage("5.13.0-2026-09-01") is None


# quality status (SpineAnalysisLib.quality) as a banner beside the table ---------------------------------------
def test_quality_banner_comes_from_the_library(logic, loaded):
    from SpineAnalysisLib import quality

    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    expected = quality.assess(logic.measurementsOfTable(table))
    text = logic.qualityText(table)
    assert text.startswith(f"Quality: {expected.status}")
    assert all(reason in text for reason in expected.reasons)
    assert logic.qualityText(None) == ""
