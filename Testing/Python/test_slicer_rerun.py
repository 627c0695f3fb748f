"""After the model run, on real MRML scenes (slicer-core): the reader reviews the levels the model was unsure of
("Mark levels reviewed"), and presses Segment again on a volume that already has a (corrected) segmentation.

The model runs are the module's own background path (``startSegmentation`` + ``completeSegmentation``, what the
Segment button does) with a stand-in worker that writes the phantom's labels and a ``--summary`` JSON as the CLI
does, so that no torch is needed and each run takes well under a second.
"""

from __future__ import annotations

import csv
import json
import sys
import textwrap
import time

import pytest

from test_slicer_workflow import _erase_superior_mm, _save_and_reload

#: the run's labelling report, as ``segment --summary`` writes it (model/labelling.py: an uncertain chain halves the
#: confidence and adds a flag)
UNSURE = {"model": "stand-in 1", "device": "cpu", "levels": ["L3", "L4", "L5"], "levels_uncertain": True, "confidence": 0.45,
          "flags": ["levels uncertain: the lowest vertebra could be L5 or S1"], "warnings": []}  # fmt: skip
MODEL_SAID = ["levels uncertain (labelling chain checks)", "level count uncertain (confidence 0.45 < 0.6)"]

_WORKER = """
    import json, sys
    import SimpleITK as sitk
    labels = sitk.ReadImage(sys.argv[3])
    labels.CopyInformation(sitk.ReadImage(sys.argv[1]))
    sitk.WriteImage(labels, sys.argv[2])
    json.dump(json.loads(sys.argv[5]), open(sys.argv[4], "w"))
"""


def _segment(logic, volume, phantom, tmp_path, summary=UNSURE):
    """One press of Segment: the background run, then ``completeSegmentation`` (new segmentation and table)."""
    worker = tmp_path / "stand_in_model.py"
    worker.write_text(textwrap.dedent(_WORKER), encoding="utf-8")
    job = logic.startSegmentation(volume, command=[sys.executable, str(worker), "{input}", "{output}", phantom[1], "{summary}", json.dumps(summary)])
    deadline = time.monotonic() + 60
    while job.is_running and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.02)
    return logic.completeSegmentation(job)


def test_the_reader_marks_the_levels_reviewed_and_the_banner_export_and_saved_scene_say_so(spine_module, slicer_scene, logic, phantom, tmp_path):
    """The model was unsure of the levels; the reader shifts them and corrects them back, then presses "Mark levels
    reviewed": the banner stops saying "levels uncertain" and says what the model said; the values' own plausibility
    gate still fails an impossible disc; the export and a saved scene keep both; a new model run is not reviewed."""
    from SpineAnalysisSlicer import banner

    volume, _ = logic.loadInputs(phantom[0])
    segmentation, table = _segment(logic, volume, phantom, tmp_path)
    shown = []
    quality = banner.QualityBanner(shown.append)
    quality.setTable(table)
    unsure = "Quality: review - " + "; ".join(MODEL_SAID)
    assert shown == [unsure]
    logic.observeSegmentation(segmentation, volume, table)
    logic.shiftLevels(segmentation, +1)  # the reader checks the levels, corrects, and corrects back
    logic.recomputeDirty()
    logic.shiftLevels(segmentation, -1)
    logic.recomputeDirty()
    assert shown[-1] == unsure  # correcting the levels is not a statement that they were reviewed
    assert logic.levelsReviewed(segmentation) is None
    structured = logic.exportStructuredMeasurements(table, volume, str(tmp_path / "before.csv"))
    assert {row["quality"] for row in csv.DictReader(open(structured, encoding="utf-8"))} == {"review"}  # as the banner

    when = logic.markLevelsReviewed(segmentation)
    assert logic.levelsReviewed(segmentation) == when
    reviewed = "levels reviewed by the reader (model said: " + "; ".join(MODEL_SAID) + ")"
    assert shown[-1] == "Quality: ok - " + reviewed  # the banner follows without a re-measurement
    _erase_superior_mm(logic, segmentation, volume, "L4-L5", 9.5)  # a 0.5 mm disc: outside its physical range
    assert logic.recomputeDirty() is table
    assert shown[-1].startswith("Quality: failed - L4-L5 height_mean_mm") and shown[-1].endswith("; " + reviewed)
    quality.stop()
    logic.stopObserving()

    csv_path, json_path = logic.exportMeasurements(table, str(tmp_path / "export"), volume)
    summary_path = spine_module.exports.summaryPath(str(tmp_path / "export"), volume.GetName())
    summary = json.load(open(summary_path, encoding="utf-8"))
    assert summary["quality"]["status"] == "failed"
    assert summary["quality"]["levels_review"] == {"reviewed_at": when, "model_said": MODEL_SAID}
    assert summary["quality"]["notes"] == UNSURE["flags"]
    assert {row["quality"] for row in csv.DictReader(open(csv_path, encoding="utf-8"))} == {"failed"}
    structured = logic.exportStructuredMeasurements(table, volume, str(tmp_path / "export" / "dicom.csv"))
    assert {row["quality"] for row in csv.DictReader(open(structured, encoding="utf-8"))} == {"failed"}
    with pytest.raises(FileExistsError):  # the summary is one of the files a second export would replace
        logic.exportMeasurements(table, str(tmp_path / "export"), volume)

    parameters = logic.getParameterNode()  # what the widget shows
    parameters.inputVolume, parameters.segmentation, parameters.table = volume, segmentation, table
    _save_and_reload(slicer_scene, str(tmp_path / "saved"), [(volume, "image.nrrd"), (segmentation, "labels.seg.nrrd"), (table, "table.tsv")])
    logic = spine_module.SpineAnalysisLogic()  # Slicer restarted
    parameters = logic.getParameterNode()
    volume, segmentation, table = parameters.inputVolume, parameters.segmentation, parameters.table
    assert logic.levelsReviewed(segmentation) == when
    assert logic.qualityText(table).endswith("; " + reviewed)
    logic.updateTable(segmentation, volume, table)  # measured again after loading: still reviewed
    assert logic.qualityText(table).startswith("Quality: failed") and logic.qualityText(table).endswith("; " + reviewed)

    again, again_table = _segment(logic, volume, phantom, tmp_path)  # the model segments the volume again
    assert logic.levelsReviewed(again) is None and logic.qualityText(again_table) == unsure
    assert logic.levelsReviewed(segmentation) == when  # the reviewed segmentation keeps its own review


def test_a_review_of_levels_the_model_was_sure_of_changes_nothing_but_the_record(logic, phantom, tmp_path):
    volume, _ = logic.loadInputs(phantom[0])
    sure = dict(UNSURE, levels_uncertain=False, confidence=0.9, flags=[])
    segmentation, table = _segment(logic, volume, phantom, tmp_path, sure)
    assert logic.qualityText(table) == "Quality: ok"
    logic.markLevelsReviewed(segmentation)
    assert logic.qualityText(table) == "Quality: ok - levels reviewed by the reader"


def test_a_model_run_written_into_a_reviewed_segmentation_clears_the_review(logic, spine_module, phantom):
    """Scripts may write a run into an existing node (``rememberModelOutput``): the review was of other labels."""
    import SimpleITK as sitk

    volume, segmentation = logic.loadInputs(phantom[0], phantom[1])
    logic.markLevelsReviewed(segmentation)
    logic.rememberModelOutput(segmentation, sitk.ReadImage(phantom[1]), "stand-in 1", UNSURE)
    assert logic.levelsReviewed(segmentation) is None
    table = logic.updateTable(segmentation, volume)
    assert "levels uncertain" in logic.qualityText(table)


def _visible(segmentation) -> bool:
    return bool(segmentation.GetDisplayNode().GetVisibility())


def test_segmenting_again_hides_the_earlier_corrected_segmentation_and_the_table_follows_the_new_one(logic, phantom, tmp_path):
    """Segment, correct, Segment again: the corrected segmentation is kept with its corrections and its table, but
    hidden and named as the earlier one (not drawn under the new one); the new one has the plain name, is shown, and
    has the table; the status line names what was set aside. A third run keeps both earlier ones, numbered."""
    import numpy as np
    import slicer

    volume, _ = logic.loadInputs(phantom[0])
    first, first_table = _segment(logic, volume, phantom, tmp_path)
    plain = first.GetName()
    assert plain == "image segmentation" and logic.earlierSegmentationsNote(first) == ""
    logic.observeSegmentation(first, volume, first_table)
    _erase_superior_mm(logic, first, volume, "L4-L5", 2.0)  # the reader's correction
    logic.recomputeDirty()
    logic.stopObserving()
    corrected_height = logic.tableValue(first_table, "L4-L5", "height_mean_mm")
    disc = logic.segmentIdByName(first, "L4-L5")
    corrected = slicer.util.arrayFromSegmentBinaryLabelmap(first, disc, volume)

    second, second_table = _segment(logic, volume, phantom, tmp_path)
    assert slicer.mrmlScene.GetNodeByID(first.GetID()) is first  # kept, with the correction
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(first, disc, volume), corrected)
    assert not _visible(first) and _visible(second)
    assert (first.GetName(), second.GetName()) == ("image segmentation (earlier)", plain)
    assert first_table.GetName() == "image segmentation measurements (earlier)"
    assert second_table.GetName() == "image segmentation measurements"
    assert logic.tableForSegmentation(second, first_table) is second_table  # the widget's table follows the new one
    assert logic.segmentationForVolume(volume, second) is second
    assert logic.tableValue(first_table, "L4-L5", "height_mean_mm") == corrected_height
    assert logic.tableValue(second_table, "L4-L5", "height_mean_mm") > corrected_height + 1.5  # the model's disc again
    assert logic.earlierSegmentationsNote(second) == ("The earlier segmentation of this volume is kept, hidden: "
                                                      "'image segmentation (earlier)' (show it in the Data module).")

    third, _third_table = _segment(logic, volume, phantom, tmp_path)
    assert [node.GetName() for node in (first, second, third)] == ["image segmentation (earlier)", "image segmentation (earlier 2)", plain]
    assert [_visible(node) for node in (first, second, third)] == [False, False, True]
    assert "'image segmentation (earlier)', 'image segmentation (earlier 2)'" in logic.earlierSegmentationsNote(third)
    assert logic.segmentationsOfVolume(volume) == [first, second, third]  # nothing removed
