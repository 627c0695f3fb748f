"""The radiologist's workflow through the module's Logic on real MRML scenes (slicer-core): corrections made while
the module was not watching (another module open, automatic update off, a reloaded scene) must still reach the
table; what the widget shows next to the table must follow each measurement."""

from __future__ import annotations

import numpy as np
import pytest

from SpineAnalysisLib import labels as scheme


@pytest.fixture
def loaded(logic, phantom):
    return logic.loadInputs(phantom[0], phantom[1])


def _erase_superior_mm(logic, segmentation, volume, name, mm):
    """Erase the top ``mm`` of a segment as a Segment Editor erase would (returns the erased thickness in mm)."""
    import slicer

    from SpineAnalysis import SpineAnalysisTest

    segment_id = logic.segmentIdByName(segmentation, name)
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume)
    axis, upward = SpineAnalysisTest.superiorAxis(volume)
    step = volume.GetSpacing()[2 - axis]
    count = int(round(mm / step))
    occupied = np.nonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis)))[0]
    index = [slice(None)] * 3
    index[axis] = occupied[-count:] if upward > 0 else occupied[:count]
    mask[tuple(index)] = 0
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, segment_id, volume)
    return count * step


def test_an_edit_made_while_nobody_watched_is_measured_once_watching_starts(logic, loaded):
    """Measure, then correct the disc while the module does not watch (automatic update off, or the scene was
    loaded and the Segment Editor used before the module was opened): when the module watches again, the table
    must not go on showing the height from before the correction."""
    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    before = logic.tableValue(table, "L4-L5", "height_mean_mm")
    erased = _erase_superior_mm(logic, segmentation, volume, "L4-L5", 2.0)  # nobody observes this edit
    logic.observeSegmentation(segmentation, volume, table)
    assert logic.pendingLabels == {scheme.label_from_name("L4-L5")}
    assert logic.recomputeDirty() is table
    assert logic.tableValue(table, "L4-L5", "height_mean_mm") == pytest.approx(before - erased, abs=0.5)
    assert logic.recomputeDirty() is None  # and nothing more to do
    logic.stopObserving()


def test_a_rename_made_while_nobody_watched_re_measures_everything(logic, loaded):
    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    segmentation.GetSegmentation().GetSegment(logic.segmentIdByName(segmentation, "L3")).SetName("L2")  # nobody observes it
    logic.observeSegmentation(segmentation, volume, table)
    assert logic.fullRecomputePending
    logic.recomputeDirty()
    assert logic.tableValue(table, "L3", "height_middle_mm") is None  # no row of the old name is left
    assert logic.tableValue(table, "L2", "height_middle_mm") is not None
    logic.stopObserving()


def test_watching_an_unedited_segmentation_measures_nothing(logic, loaded):
    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    logic.stopObserving()
    logic.observeSegmentation(segmentation, volume, table)
    assert logic.pendingLabels == set() and not logic.fullRecomputePending and logic.recomputeDirty() is None
    logic.stopObserving()


def test_the_quality_banner_follows_a_re_measurement_of_the_same_table(logic, loaded, spine_module):
    """An edit re-measured into the table the widget already shows changes its quality, while the parameter node
    (same table node) does not change: the banner must follow the table, not the parameter node."""
    import vtk

    from SpineAnalysisSlicer import banner

    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    # the premise: writing the same table into the parameter node as Slicer's NodeSerializer.write does
    # (SetParameter(name, "") and SetNodeReferenceID) fires no ModifiedEvent, so the widget's _updateGui never runs
    parameterNode = logic.getParameterNode().parameterNode
    parameterNode.SetParameter("table", "")
    parameterNode.SetNodeReferenceID("table", table.GetID())
    events = []
    tag = parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: events.append(event))
    parameterNode.SetParameter("table", "")
    parameterNode.SetNodeReferenceID("table", table.GetID())
    parameterNode.RemoveObserver(tag)
    assert events == []
    shown = []
    quality = banner.QualityBanner(shown.append)
    quality.setTable(table)
    assert shown == ["Quality: ok"]
    logic.observeSegmentation(segmentation, volume, table)
    _erase_superior_mm(logic, segmentation, volume, "L4-L5", 9.5)  # a 0.5 mm disc: outside its physical range
    assert logic.recomputeDirty() is table
    assert shown[-1].startswith("Quality: failed") and "L4-L5 height_mean_mm" in shown[-1]
    quality.stop()  # observer removed (scene closed, module reloaded): later changes are not shown
    count = len(shown)
    table.SetAttribute(spine_module.table.QUALITY_ATTRIBUTE, '{"status": "ok"}')
    assert len(shown) == count
    logic.stopObserving()


def test_a_table_that_could_not_follow_an_edit_says_so_until_it_can(logic, loaded, spine_module):
    """Every segment erased: the re-measurement fails and the table would go on showing the erased structures as if
    they were measured. It must say it is out of date (in the quality banner) until a measurement succeeds."""
    import slicer

    from SpineAnalysisLib.errors import InputError

    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    logic.observeSegmentation(segmentation, volume, table)
    kept = {}
    for segment_id in logic.segmentIds(segmentation):
        kept[segment_id] = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume)
        slicer.util.updateSegmentBinaryLabelmapFromArray(np.zeros_like(kept[segment_id]), segmentation, segment_id, volume)
    with pytest.raises(InputError):
        logic.recomputeDirty()
    assert logic.qualityText(table).startswith("Measurements out of date")
    assert "is empty" in logic.qualityText(table)
    assert logic.rescoreIfSubjectChanged(segmentation, volume, table, sex="male", age=60) is True  # re-scored, not re-measured
    assert logic.qualityText(table).startswith("Measurements out of date")
    for segment_id, mask in kept.items():  # Segment Editor undo
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, segment_id, volume)
    assert logic.recomputeDirty() is table
    assert logic.qualityText(table) == "Quality: ok"
    logic.stopObserving()


def _set_cell(table, structure, parameter, value):
    names = table.GetTable().GetColumnByName("Structure")
    row = [names.GetValue(r) for r in range(table.GetNumberOfRows())].index(structure)
    table.GetTable().GetColumnByName(parameter).SetValue(row, value)
    table.Modified()


def test_a_value_corrected_in_the_table_survives_re_measuring_other_structures(logic, loaded, tmp_path):
    """The radiologist overrides L3's middle height in the table (export writes it, noted as edited). Correcting the
    L4-L5 disc re-measures the table, and changing sex/age re-scores it: neither may throw the override away. Only
    when L3 itself measures differently does the override give way to the new measurement."""
    import csv

    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    measured = logic.tableValue(table, "L3", "height_middle_mm")
    _set_cell(table, "L3", "height_middle_mm", 21.5)
    logic.observeSegmentation(segmentation, volume, table)
    _erase_superior_mm(logic, segmentation, volume, "L4-L5", 2.0)
    assert logic.recomputeDirty() is table
    assert logic.tableValue(table, "L3", "height_middle_mm") == 21.5
    logic.rescoreIfSubjectChanged(segmentation, volume, table, sex="female", age=50)
    assert logic.tableValue(table, "L3", "height_middle_mm") == 21.5
    csv_path, _ = logic.exportMeasurements(table, str(tmp_path), volume)
    row = [r for r in csv.DictReader(open(csv_path, encoding="utf-8")) if r["level"] == "L3" and r["parameter"] == "height_middle_mm"][0]
    assert float(row["value"]) == 21.5 and "edited in the table" in row["note"]
    _erase_superior_mm(logic, segmentation, volume, "L5", 2.0)  # a vertebra: everything is measured again
    assert logic.recomputeDirty() is table and logic.tableValue(table, "L3", "height_middle_mm") == 21.5
    _erase_superior_mm(logic, segmentation, volume, "L3", 3.0)  # L3 itself changes: its new measurement is shown
    logic.recomputeDirty()
    assert logic.tableValue(table, "L3", "height_middle_mm") == pytest.approx(measured - 3.0, abs=0.6)
    logic.stopObserving()


def _save_and_reload(slicer_scene, folder, nodes):
    """File > Save (each node's data beside scene.mrml) then File > Close Scene and load scene.mrml again, as
    Slicer does it with MRML's own storage nodes."""
    import os

    scene = slicer_scene.scene
    os.makedirs(folder)
    for node, name in nodes:
        node.AddDefaultStorageNode()
        node.GetStorageNode().SetFileName(os.path.join(folder, name))
        assert node.GetStorageNode().WriteData(node)
    scene.SetRootDirectory(folder)
    scene.SetURL(os.path.join(folder, "scene.mrml"))
    assert scene.Commit()
    scene.Clear(0)
    scene.SetURL(os.path.join(folder, "scene.mrml"))
    assert scene.Connect()


def test_a_saved_scene_comes_back_with_its_parameters_measurements_and_corrections(spine_module, slicer_scene, loaded, tmp_path):
    """Measure for a subject, correct a value in the table, save the scene; load it again in a restarted module:
    the parameter node names the same volume, segmentation, table and subject; the table exports at once (it was
    'measure first'), keeps the correction through re-measuring, and re-scores when the sex changes."""
    import csv

    logic = spine_module.SpineAnalysisLogic()
    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume, sex="female", age=50)
    parameters = logic.getParameterNode()
    parameters.inputVolume, parameters.segmentation, parameters.table = volume, segmentation, table
    parameters.sex, parameters.age = "female", 50
    _set_cell(table, "L3", "height_middle_mm", 21.5)
    _save_and_reload(slicer_scene, str(tmp_path / "saved"), [(volume, "image.nrrd"), (segmentation, "labels.seg.nrrd"), (table, "table.tsv")])

    logic = spine_module.SpineAnalysisLogic()  # Slicer restarted (or the module reloaded): nothing in memory
    parameters = logic.getParameterNode()
    volume, segmentation, table = parameters.inputVolume, parameters.segmentation, parameters.table
    assert (volume.GetName(), segmentation.GetName(), parameters.sex, parameters.age) == ("image", "image segmentation", "female", 50)
    assert table is not None and logic.tableValue(table, "L3", "height_middle_mm") == 21.5
    csv_path, _ = logic.exportMeasurements(table, str(tmp_path / "export"), volume)
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    edited = [r for r in rows if "edited in the table" in r["note"]]
    assert [(r["level"], r["parameter"], float(r["value"])) for r in edited] == [("L3", "height_middle_mm", 21.5)]  # not the saved file's rounding
    assert logic.rescoreIfSubjectChanged(segmentation, volume, table, sex="male", age=50) is True
    assert table.GetAttribute(spine_module.table.SUBJECT_ATTRIBUTE) == spine_module.table.subjectText("male", 50)
    logic.observeSegmentation(segmentation, volume, table, sex="male", age=50)
    assert logic.pendingLabels == set() and not logic.fullRecomputePending  # the saved segmentation is what was measured
    _erase_superior_mm(logic, segmentation, volume, "L4-L5", 2.0)
    assert logic.recomputeDirty() is table and logic.tableValue(table, "L3", "height_middle_mm") == 21.5
    logic.stopObserving()


def _ids(suite):
    import unittest

    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _ids(item)
        else:
            yield item.id()


def test_the_self_test_runs_under_slicers_harness_and_fails_when_the_module_is_broken(spine_module, slicer_scene, monkeypatch):
    """ctest runs ``slicer.testing.runUnitTest(path, "SpineAnalysis")``: unittest's loadTestsFromName on the module,
    a TextTestRunner, failure when not wasSuccessful() (Base/Python/slicer/testing.py). The module's test cases must
    be found that way and must fail when the module is broken (here: edits are never re-measured)."""
    import io
    import unittest

    found = set(_ids(unittest.TestLoader().loadTestsFromName("SpineAnalysis")))
    assert {"SpineAnalysis.SpineAnalysisTest.test_workflow", "SpineAnalysis.SpineAnalysisTest.test_sample"} <= found

    def run():
        suite = unittest.TestLoader().loadTestsFromName("SpineAnalysis.SpineAnalysisTest.test_workflow")
        return unittest.TextTestRunner(stream=io.StringIO()).run(suite)

    assert run().wasSuccessful()
    monkeypatch.setattr(spine_module.SpineAnalysisLogic, "recomputeDirty", lambda self: None)
    broken = run()
    assert not broken.wasSuccessful() and len(broken.failures) + len(broken.errors) == 1


def test_the_sample_test_without_its_sample_is_skipped_not_passed(spine_module, slicer_scene, monkeypatch):
    import io
    import unittest

    monkeypatch.setattr(spine_module.SpineAnalysisTest, "SAMPLE_IMAGE", "missing_image.nii.gz")
    suite = unittest.TestLoader().loadTestsFromName("SpineAnalysis.SpineAnalysisTest.test_sample")
    result = unittest.TextTestRunner(stream=io.StringIO()).run(suite)
    assert result.wasSuccessful() and len(result.skipped) == 1  # it returned early and counted as passed before
    test = spine_module.SpineAnalysisTest()
    test.runTest()  # "Reload and Test"
    assert [name for name, _reason in test.skipped] == ["test_sample"]


def _exported(csv_path, level, parameter):
    import csv

    return [float(r["value"]) for r in csv.DictReader(open(csv_path, encoding="utf-8")) if r["level"] == level and r["parameter"] == parameter][0]


def test_export_never_writes_numbers_from_before_the_last_correction(logic, loaded, tmp_path):
    """Correct the disc and press Export before the widget's debounce timer has re-measured: the file must hold the
    corrected height. With nothing watching (automatic update off) a corrected segmentation is refused until it is
    measured again, instead of exporting the old numbers."""
    from SpineAnalysisLib.errors import InputError

    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    before = logic.tableValue(table, "L4-L5", "height_mean_mm")
    logic.observeSegmentation(segmentation, volume, table)
    erased = _erase_superior_mm(logic, segmentation, volume, "L4-L5", 2.0)  # the timer has not fired yet
    csv_path, _ = logic.exportMeasurements(table, str(tmp_path / "a"), volume)
    assert _exported(csv_path, "L4-L5", "height_mean_mm") == pytest.approx(before - erased, abs=0.5)
    logic.stopObserving()  # automatic update off
    _erase_superior_mm(logic, segmentation, volume, "L4-L5", 2.0)
    with pytest.raises(InputError, match="changed since it was measured"):
        logic.exportMeasurements(table, str(tmp_path / "b"), volume)
    with pytest.raises(InputError, match="changed since it was measured"):
        logic.exportStructuredMeasurements(table, volume, str(tmp_path / "c.csv"))
    logic.updateTable(segmentation, volume, table)  # Measure
    csv_path, _ = logic.exportMeasurements(table, str(tmp_path / "b"), volume)
    assert _exported(csv_path, "L4-L5", "height_mean_mm") == pytest.approx(before - 2 * erased, abs=0.5)


def test_an_edit_of_a_segmentation_named_by_another_tool_is_re_measured(logic, loaded, tmp_path):
    """SlicerTotalSegmentator names ("vertebrae_L4", "vertebrae_body", "intervertebral_discs") are measured as they
    are (issue 29); an edit of such a segment has no label of our scheme, and was never re-measured nor caught at
    export."""
    import slicer

    from SpineAnalysisLib.errors import InputError

    volume, segmentation = loaded
    whole = segmentation.GetSegmentation()
    masks = {name: slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, logic.segmentIdByName(segmentation, name), volume)
             for name in ("L3", "L4", "L5", "L3-L4", "L4-L5")}  # fmt: skip
    for name in masks:
        whole.RemoveSegment(logic.segmentIdByName(segmentation, name))
    union = {"vertebrae_body": ("L3", "L4", "L5"), "intervertebral_discs": ("L3-L4", "L4-L5")}
    for name, mask in [(f"vertebrae_{n}", masks[n]) for n in ("L3", "L4", "L5")] + [(n, sum(masks[p] for p in parts)) for n, parts in union.items()]:
        whole.AddEmptySegment(name, name)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), segmentation, name, volume)
    table = logic.updateTable(segmentation, volume)
    before = logic.tableValue(table, "L3", "height_middle_mm")
    assert before == pytest.approx(25.0, abs=1.0)
    logic.observeSegmentation(segmentation, volume, table)
    erased = _erase_superior_mm(logic, segmentation, volume, "vertebrae_body", 3.0)  # the top of L3's body
    assert logic.fullRecomputePending
    assert logic.recomputeDirty() is table
    assert logic.tableValue(table, "L3", "height_middle_mm") == pytest.approx(before - erased, abs=0.6)
    logic.stopObserving()
    _erase_superior_mm(logic, segmentation, volume, "vertebrae_body", 2.0)  # nothing watches
    with pytest.raises(InputError, match="changed since it was measured"):
        logic.exportMeasurements(table, str(tmp_path), volume)


def test_correcting_a_disc_re_grades_its_neighbour(logic, tmp_path):
    """Pfirrmann's "collapsed" compares a disc's height with its neighbouring discs' (measure/pfirrmann.py). A dark
    6 mm L4-L5 under an over-drawn 14 mm L3-L4 reads 43 % of its neighbour: grade V. Correcting L3-L4 to 10 mm
    makes it 61 %: the table must re-grade L4-L5 as a full measurement does, not keep the V (it was only the
    edited disc that was measured again)."""
    import SimpleITK as sitk

    import phantoms

    phantom = phantoms.build_spine((21, 22, 23, 24), discs={21: 10.0, 22: 14.0, 23: 6.5})
    labels, image = phantoms.render_phantom(phantom)
    voxels = sitk.GetArrayFromImage(image).astype(np.float32)
    voxels[sitk.GetArrayFromImage(labels) == scheme.label_from_name("L4-L5")] = 45.0  # a black nucleus
    voxels += np.random.default_rng(1).normal(0.0, 3.0, voxels.shape)
    dark = sitk.GetImageFromArray(np.clip(voxels, 0, 255).astype(np.uint8))
    dark.CopyInformation(image)
    sitk.WriteImage(dark, str(tmp_path / "image.nii.gz"))
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    volume, segmentation = logic.loadInputs(str(tmp_path / "image.nii.gz"), str(tmp_path / "labels.nii.gz"))
    table = logic.updateTable(segmentation, volume)
    assert logic.tableValue(table, "L4-L5", "pfirrmann_estimate") == 5
    logic.observeSegmentation(segmentation, volume, table)
    _erase_superior_mm(logic, segmentation, volume, "L3-L4", 4.0)
    assert logic.recomputeDirty() is table
    fresh = logic.updateTable(segmentation, volume)  # a full measurement into a new table
    assert logic.tableValue(fresh, "L4-L5", "pfirrmann_estimate") == 4
    assert logic.tableValue(table, "L4-L5", "pfirrmann_estimate") == 4
    logic.stopObserving()


def test_a_run_that_found_no_gpu_says_it_ran_on_the_cpu(logic, phantom, tmp_path):
    """Device "auto" without a GPU: the background run falls back to the CPU (its --summary says "device": "cpu")
    and the module says so once the run is done; a run on a GPU, or asked for the CPU, says nothing."""
    import sys
    import time

    script = tmp_path / "fake_segment.py"
    script.write_text(
        "import json, shutil, sys\n"
        "shutil.copy(sys.argv[2], sys.argv[1])\n"
        "json.dump({'model': 'stand-in', 'device': sys.argv[4], 'levels': ['L3', 'L4', 'L5']}, open(sys.argv[3], 'w'))\n"
    )
    notes = {}
    for device, ran in (("auto", "cpu"), ("auto", "cuda"), ("cpu", "cpu")):
        job = logic.startSegmentation(logic.loadInputs(phantom[0])[0], None, device,
                                      command=[sys.executable, str(script), "{output}", phantom[1], "{summary}", ran])  # fmt: skip
        deadline = time.monotonic() + 30
        while job.is_running and time.monotonic() < deadline:
            job.poll()
            time.sleep(0.05)
        segmentation, _table = logic.completeSegmentation(job)
        notes[(device, ran)] = logic.deviceNote(segmentation, device)
    assert "ran on the CPU" in notes[("auto", "cpu")]
    assert notes[("auto", "cuda")] == "" and notes[("cpu", "cpu")] == ""


def test_segment_editor_undo_is_a_correction_too(logic, loaded):
    """The Segment Editor's Undo restores a saved state (vtkSegmentationHistory.RestorePreviousState, as
    qMRMLSegmentEditorWidget::undo does): the table must follow it back."""
    import slicer

    volume, segmentation = loaded
    table = logic.updateTable(segmentation, volume)
    before = logic.tableValue(table, "L4-L5", "height_mean_mm")
    logic.observeSegmentation(segmentation, volume, table)
    history = slicer.vtkSegmentationHistory()
    history.SetSegmentation(segmentation.GetSegmentation())
    history.SaveState()
    _erase_superior_mm(logic, segmentation, volume, "L4-L5", 3.0)
    logic.recomputeDirty()
    assert logic.tableValue(table, "L4-L5", "height_mean_mm") < before - 2.0
    assert history.RestorePreviousState()
    assert logic.pendingLabels == {scheme.label_from_name("L4-L5")}
    logic.recomputeDirty()
    assert logic.tableValue(table, "L4-L5", "height_mean_mm") == pytest.approx(before)
    logic.stopObserving()
