"""SpineAnalysisLogic for the annotators' loop on real MRML scenes (slicer-core): the model output kept beside the
segmentation it created, "Export training case", the model list, DICOM folder and DICOM SEG loading."""

from __future__ import annotations

import json
import sys
import textwrap
import time
import types

import numpy as np
import pytest
import SimpleITK as sitk

from SpineAnalysisLib import annotation
from SpineAnalysisLib import labels as scheme
from SpineAnalysisLib.errors import InputError


def _model_output(phantom):
    """What the stand-in model "finds": the phantom without its L4-L5 disc."""
    labels = sitk.ReadImage(phantom[1])
    array = sitk.GetArrayFromImage(labels)
    array[array == 123] = 0
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(labels)
    return result


@pytest.fixture
def segmented(logic, phantom, monkeypatch):
    """A segmentation created by a (stand-in) model run, as the module's Segment button creates it."""
    volume, _ = logic.loadInputs(phantom[0])

    def segment_image(image, model_name=None, device="auto", progress=None):
        output = _model_output(phantom)
        output.CopyInformation(image)
        return types.SimpleNamespace(label_map=output, model="spine-mri-2d 9.9.9")

    monkeypatch.setitem(sys.modules, "SpineAnalysisLib.inference", types.SimpleNamespace(segment_image=segment_image))
    segmentation = logic.runSegmentation(volume, "default", "cpu", synchronous=True)
    return volume, segmentation


def test_the_logic_keeps_the_model_output_of_the_segmentation_it_created(logic, segmented, phantom, spine_module):
    volume, segmentation = segmented
    original, model = logic.modelOutput(segmentation)
    assert model == "spine-mri-2d 9.9.9"
    np.testing.assert_array_equal(sitk.GetArrayFromImage(original), sitk.GetArrayFromImage(_model_output(phantom)))
    node = segmentation.GetNodeReference(spine_module.MODEL_OUTPUT_REFERENCE)
    assert node.GetHideFromEditors() and node.GetAttribute(spine_module.MODEL_ATTRIBUTE) == "spine-mri-2d 9.9.9"
    loaded_volume, loaded = logic.loadInputs(phantom[0], phantom[1])
    assert logic.modelOutput(loaded) == (None, None)  # a loaded segmentation has no model output
    # running the model again makes a new segmentation with its own kept output; the first keeps its own
    again = logic.runSegmentation(volume, "default", "cpu", synchronous=True)
    assert again is not segmentation and segmentation.GetNodeReference(spine_module.MODEL_OUTPUT_REFERENCE) is node
    assert again.GetNodeReference(spine_module.MODEL_OUTPUT_REFERENCE) not in (None, node)


def test_export_training_case_writes_corrected_and_original_labels(logic, segmented, phantom, tmp_path):
    import slicer

    volume, segmentation = segmented
    # the annotator paints the missing L4-L5 disc and trims L3
    truth = sitk.GetArrayFromImage(sitk.ReadImage(phantom[1]))
    segmentation.GetSegmentation().AddEmptySegment("L4-L5", "L4-L5")
    disc = logic.segmentIdByName(segmentation, "L4-L5")
    logic.applySchemeToSegment(segmentation.GetSegmentation().GetSegment(disc))
    slicer.util.updateSegmentBinaryLabelmapFromArray((truth == 123).astype(np.uint8), segmentation, disc, volume)
    l3 = logic.segmentIdByName(segmentation, "L3")
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, l3, volume)
    removed = int(mask[:, :, np.nonzero(mask.any(axis=(0, 1)))[0][:1]].sum())
    mask[:, :, np.nonzero(mask.any(axis=(0, 1)))[0][:1]] = 0
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, l3, volume)

    result = logic.exportTrainingCase(segmentation, volume, str(tmp_path / "dataset"), "phantom-01", annotator="tester")
    back = annotation.read_training_case(tmp_path / "dataset", "phantom-01")
    corrected = logic.segmentationToLabelArray(segmentation, volume)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back.labels), corrected)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back.original), sitk.GetArrayFromImage(_model_output(phantom)))
    provenance = result.provenance
    assert provenance["model"] == {"name": "spine-mri-2d", "version": "9.9.9"} and provenance["annotator"] == "tester"
    assert sorted(provenance["edited_structures"]) == ["L3", "L4-L5"]
    assert provenance["segments"]["L4-L5"]["changed_voxels"] == int((truth == 123).sum())
    assert provenance["segments"]["L3"]["changed_voxels"] == removed > 0
    assert provenance["segments"]["L5"]["status"] == "unchanged"
    assert set(back.names.values()) == {"L3", "L3-L4", "L4", "L4-L5", "L5"}
    assert json.loads((tmp_path / "dataset" / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 1


def test_export_of_a_loaded_segmentation_and_refusals(logic, phantom, tmp_path):
    volume, segmentation = logic.loadInputs(phantom[0], phantom[1])
    result = logic.exportTrainingCase(segmentation, volume, str(tmp_path / "d"))
    assert result.case_id == volume.GetName() and result.provenance["original_available"] is False
    with pytest.raises(InputError, match="no segmentation"):
        logic.exportTrainingCase(None, volume, str(tmp_path / "d"))
    with pytest.raises(InputError, match="dataset folder"):
        logic.exportTrainingCase(segmentation, volume, "")


def test_model_of_a_background_job_is_read_from_its_json_summary(logic, phantom, tmp_path):
    """The module reads the CLI's --summary JSON (model, labelling checks), not a sentence from stdout."""
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent("""
        import json, sys
        import SimpleITK as sitk
        labels = sitk.ReadImage(sys.argv[3])
        labels.CopyInformation(sitk.ReadImage(sys.argv[1]))
        sitk.WriteImage(labels, sys.argv[2])
        print("progress: 1.0000 done", flush=True)
        print("0.4 s on cpu with something-else 9", flush=True)  # human text: not parsed
        json.dump({"model": "spine-mri-2d-finetuned 3", "levels": ["L3", "L4", "L5"], "levels_uncertain": True,
                   "confidence": 0.9, "flags": [], "warnings": []}, open(sys.argv[4], "w"))
    """))
    volume, _ = logic.loadInputs(phantom[0])
    job = logic.startSegmentation(volume, model="spine-mri-2d-finetuned@3",
                                  command=[sys.executable, str(worker), "{input}", "{output}", phantom[1], "{summary}"])  # fmt: skip
    deadline = time.monotonic() + 60
    while job.is_running and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.05)
    segmentation = logic.finishSegmentation(job)
    original, model = logic.modelOutput(segmentation)
    assert model == "spine-mri-2d-finetuned 3"
    table = logic.updateTable(segmentation, volume)  # the run's labelling checks reach the quality status
    assert logic.qualityText(table).startswith("Quality: review") and "levels uncertain" in logic.qualityText(table)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(original), sitk.GetArrayFromImage(sitk.ReadImage(phantom[1])))


def test_available_models_lists_the_default_then_every_model(logic, tmp_path, monkeypatch):
    for name, version in (("spine-mri-2d-finetuned", "1"), ("spine-mri-2d-finetuned", "2")):
        folder = tmp_path / f"{name}-{version}"
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"name": name, "version": version, "weights": "weights.pt"}))
    monkeypatch.setenv("SPINEANALYSIS_MODELS", str(tmp_path))
    models = logic.availableModels()
    assert models[0][1] == "default"
    choices = [model for _text, model in models]
    assert "spine-mri-2d-finetuned@1" in choices and "spine-mri-2d-finetuned@2" in choices
    assert ("spine-mri-2d-finetuned 2", "spine-mri-2d-finetuned@2") in models


def test_dicom_folder_and_dicom_seg_are_loaded(logic, tmp_path):
    pytest.importorskip("highdicom")
    from dicom_series import spine_phantom, write_mr_series
    from SpineAnalysisLib import dicomseg, imageio

    image_array, labels = spine_phantom()
    lookup = np.zeros(256, np.uint16)
    lookup[[22, 122, 23, 123, 24]] = [23, 123, 24, 124, 25]  # ..., L5-L6, L6
    labels = lookup[labels]
    write_mr_series(tmp_path / "mr", image_array)
    reference = imageio.read_image(tmp_path / "mr")
    dicomseg.write_dicom_seg(imageio.label_map_like(labels, reference), tmp_path / "mr", tmp_path / "seg.dcm")
    volume, segmentation = logic.loadInputs(str(tmp_path / "mr"), str(tmp_path / "seg.dcm"))
    segments = segmentation.GetSegmentation()
    names = [segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())]
    assert names == ["L4", "L4-L5", "L5", "L5-L6", "L6"]
    np.testing.assert_array_equal(logic.segmentationToLabelArray(segmentation, volume), labels)
    assert scheme.label_from_name("L5-L6") == 124


def test_measurements_of_a_dicom_volume_are_exported_with_its_identifiers(logic, tmp_path):
    import csv

    from dicom_series import spine_phantom, write_mr_series
    from SpineAnalysisLib import imageio

    image_array, labels = spine_phantom()
    uids = write_mr_series(tmp_path / "mr", image_array)
    sitk.WriteImage(imageio.label_map_like(labels, imageio.read_image(tmp_path / "mr")), str(tmp_path / "labels.nii.gz"))
    volume, segmentation = logic.loadInputs(str(tmp_path / "mr"), str(tmp_path / "labels.nii.gz"))
    assert logic.dicomIdentifiers(volume) == {"PatientID": uids["PatientID"], "StudyInstanceUID": uids["StudyInstanceUID"],
                                              "SeriesInstanceUID": uids["SeriesInstanceUID"], "Modality": "MR"}  # fmt: skip
    table = logic.updateTable(segmentation, volume)
    path = logic.exportStructuredMeasurements(table, volume, str(tmp_path / "out" / "measurements_dicom.csv"), includePatientId=False)
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    assert rows and {r["SeriesInstanceUID"] for r in rows} == {uids["SeriesInstanceUID"]} and "PatientID" not in rows[0]
    assert {"L4", "L4-L5"} <= {r["level"] for r in rows}


def test_dicom_seg_export_of_a_model_segmentation_marks_edited_structures(logic, tmp_path, monkeypatch):
    import pydicom
    import slicer

    pytest.importorskip("highdicom")
    from dicom_series import spine_phantom, write_mr_series
    from SpineAnalysisLib import dicomseg, imageio

    image_array, labels = spine_phantom()
    write_mr_series(tmp_path / "mr", image_array)
    volume, _ = logic.loadInputs(str(tmp_path / "mr"))

    def segment_image(image, model_name=None, device="auto", progress=None):
        return types.SimpleNamespace(label_map=imageio.label_map_like(labels, image), model="spine-mri-2d 9.9.9")

    monkeypatch.setitem(sys.modules, "SpineAnalysisLib.inference", types.SimpleNamespace(segment_image=segment_image))
    segmentation = logic.runSegmentation(volume, "default", "cpu", synchronous=True)
    l4 = logic.segmentIdByName(segmentation, "L4")
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, l4, volume)
    mask[:, np.nonzero(mask.any(axis=(0, 2)))[0][:1], :] = 0  # the annotator trims the top row of L4
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, l4, volume)
    path = logic.exportDicomSeg(segmentation, volume, str(tmp_path / "seg.dcm"))
    kinds = {s.SegmentLabel: s.SegmentAlgorithmType for s in pydicom.dcmread(path).SegmentSequence}
    assert kinds == {"L3": "AUTOMATIC", "L3-L4": "AUTOMATIC", "L4": "SEMIAUTOMATIC", "L4-L5": "AUTOMATIC", "L5": "AUTOMATIC"}
    back, _names = dicomseg.read_dicom_seg(path, tmp_path / "mr")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), logic.segmentationToLabelArray(segmentation, volume))
    sitk.WriteImage(imageio.read_image(tmp_path / "mr"), str(tmp_path / "mr.nii.gz"))
    other, _ = logic.loadInputs(str(tmp_path / "mr.nii.gz"))  # a volume from a file has no source series
    with pytest.raises(InputError, match="source series"):
        logic.exportDicomSeg(segmentation, other, str(tmp_path / "x.dcm"))


def test_a_painted_segment_without_a_level_name_is_not_dropped_silently(logic, phantom, tmp_path):
    """A missed disc painted into Slicer's default "Segment_1" and not renamed would be left out of the label map:
    the training export and the DICOM SEG export refuse with its name instead; once renamed it is exported."""
    import slicer

    volume, segmentation = logic.loadInputs(phantom[0], phantom[1])
    truth = sitk.GetArrayFromImage(sitk.ReadImage(phantom[1]))
    disc = segmentation.GetSegmentation().AddEmptySegment("", "Segment_1")
    slicer.util.updateSegmentBinaryLabelmapFromArray((truth == 123).astype(np.uint8), segmentation, disc, volume)
    segmentation.GetSegmentation().RemoveSegment(logic.segmentIdByName(segmentation, "L4-L5"))
    with pytest.raises(InputError, match="'Segment_1' hold"):
        logic.exportTrainingCase(segmentation, volume, str(tmp_path / "d"))
    with pytest.raises(InputError, match="'Segment_1' hold"):
        logic.exportDicomSeg(segmentation, volume, str(tmp_path / "seg.dcm"))
    assert not (tmp_path / "d").exists()
    segmentation.GetSegmentation().AddEmptySegment("", "notes")  # an empty segment of any name is no loss
    segmentation.GetSegmentation().GetSegment(disc).SetName("L4-L5")
    result = logic.exportTrainingCase(segmentation, volume, str(tmp_path / "d"))
    back = annotation.read_training_case(tmp_path / "d", result.case_id)
    assert int((sitk.GetArrayFromImage(back.labels) == 123).sum()) == int((truth == 123).sum())


def _keep_only(logic, segmentation, names):
    """The annotator's partial map: every other segment deleted."""
    segments = segmentation.GetSegmentation()
    for index in reversed(range(segments.GetNumberOfSegments())):
        segment = segments.GetNthSegment(index)
        if segment.GetName() not in names:
            segments.RemoveSegment(logic.segmentIdByName(segmentation, segment.GetName()))


def test_partial_map_choice_is_recorded_kept_on_reexport_and_refuses_a_bad_level(logic, phantom, tmp_path):
    """The module's *Partial map* box (parameter node ``partialMap``, ``alsoAnnotated``) reaches the provenance's
    annotated_labels; unchecked, a re-export keeps the earlier statement and says so; a bad name writes nothing."""
    parameters = logic.getParameterNode()
    assert (parameters.partialMap, parameters.alsoAnnotated) == (False, "")  # default: today's behaviour
    volume, segmentation = logic.loadInputs(phantom[0], phantom[1])
    _keep_only(logic, segmentation, {"L4-L5"})
    dataset = str(tmp_path / "dataset")
    with pytest.raises(InputError, match="'L4-L6' under 'Also annotated'"):
        logic.exportTrainingCase(segmentation, volume, dataset, "expert", partialMap=True, alsoAnnotated="L3-L4, L4-L6")
    assert not (tmp_path / "dataset").exists()

    parameters.partialMap, parameters.alsoAnnotated = True, "L3-L4 L5-S1"
    result = logic.exportTrainingCase(segmentation, volume, dataset, "expert", partialMap=parameters.partialMap, alsoAnnotated=parameters.alsoAnnotated)
    assert result.provenance["annotated_labels"] == {"122": "L3-L4", "123": "L4-L5", "124": "L5-S1"}
    assert logic.partialMapNote(result, True) == (
        "Partial map: annotates L3-L4, L4-L5, L5-S1 only; fine-tuning leaves every other structure unknown"
    )
    again = logic.exportTrainingCase(segmentation, volume, dataset, "expert")  # box unchecked: the statement is kept
    assert again.provenance["annotated_labels"] == result.provenance["annotated_labels"] and again.provenance["revision"] == 2
    assert "kept from the case's earlier export" in logic.partialMapNote(again, False)
    only = logic.exportTrainingCase(segmentation, volume, dataset, "expert", partialMap=True)  # checked, nothing listed
    assert only.provenance["annotated_labels"] == {"123": "L4-L5"}
    whole = logic.exportTrainingCase(segmentation, volume, dataset, "corrected", alsoAnnotated="L3-L4")  # unused unless checked
    assert whole.provenance["annotated_labels"] is None and logic.partialMapNote(whole, False) == ""


def test_a_partial_map_from_slicer_leaves_the_levels_it_does_not_outline_unknown_for_finetuning(logic, phantom, tmp_path):
    """The same disc-only map exported from Slicer with and without *Partial map*: fine-tuning's records (what each
    case annotates) leave the L3-L4 it does not outline unknown, or teach it as absent (the default rule)."""
    finetune = pytest.importorskip("SpineAnalysisLib.finetune")  # needs torch
    volume, segmentation = logic.loadInputs(phantom[0], phantom[1])
    dataset = str(tmp_path / "dataset")
    logic.exportTrainingCase(segmentation, volume, dataset, "whole")  # declares L3..L5 and both discs
    _keep_only(logic, segmentation, {"L4-L5"})
    logic.exportTrainingCase(segmentation, volume, dataset, "expert", partialMap=True)
    logic.exportTrainingCase(segmentation, volume, dataset, "expert-listed", partialMap=True, alsoAnnotated="L3-L4")
    logic.exportTrainingCase(segmentation, volume, dataset, "corrected")
    records = {r.case_id: r.annotated_labels for r in finetune.dataset_records(dataset)}
    assert records["expert"] == (123,)
    assert records["expert-listed"] == records["corrected"] == (122, 123)  # L3-L4 taught as absent
