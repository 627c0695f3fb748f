"""Everything the module writes: measurements (per case, and with DICOM identifiers), the segmentation as
.seg.nrrd, a training case for the annotators' loop, and DICOM SEG."""

from __future__ import annotations

import json
import os
import re

import SimpleITK as sitk
import slicer
from SpineAnalysisLib import annotation
from SpineAnalysisLib import dicomseg as spineDicomSeg
from SpineAnalysisLib import errors as spineErrors
from SpineAnalysisLib import imageio as spineIO
from SpineAnalysisLib import labels as scheme
from SpineAnalysisLib import measurements_export

from . import dicomsource, labelmaps, modeloutput, segments, table, volumes
from . import landmarks as shownLandmarks
from .compat import _

DICOM_IDENTIFIER_TAGS = spineIO.DICOM_IDENTIFIER_TAGS


def _needMeasurements(measurements) -> list:
    if not measurements:
        raise spineErrors.InputError(_("there are no measurements to export: measure first"))
    return measurements


def summaryPath(outputDirectory: str, image: str) -> str:
    """``<image>_measurements_summary.json`` beside the measurement files."""
    return os.path.join(outputDirectory, measurements_export.case_file_stem(image) + "_summary.json")


def landmarksPath(outputDirectory: str, image: str) -> str:
    """``<image>_measurements_landmarks.json`` beside the measurement files."""
    return os.path.join(outputDirectory, measurements_export.case_file_stem(image) + "_landmarks.json")


def exportMeasurements(measurements, tableNode, outputDirectory: str, volumeNode=None, overwrite: bool = False):
    """``<image>_measurements.csv`` and ``.json`` naming the image and the model on every row (their ``quality``
    column: the status), ``<image>_measurements_summary.json`` with the case's whole quality as the command
    line's summary.json has it (``{"image", "model", "quality": {status, reasons, notes, levels_review}}``: a
    reader's review of the levels beside what the model said) and, when the table has them, where each value was
    measured (``<image>_measurements_landmarks.json``, the command line's landmarks.json); returns the CSV and JSON
    paths.

    Raises ``FileExistsError`` (writing nothing) when the files exist and ``overwrite`` is False.
    """
    measurements = _needMeasurements(measurements)
    image = volumeNode.GetName() if volumeNode is not None else tableNode.GetName()
    model = tableNode.GetAttribute(table.MODEL_ATTRIBUTE) or ""
    summary = summaryPath(outputDirectory, image)
    landmarks = landmarksPath(outputDirectory, image)
    existing = [path for path in (summary, landmarks) if os.path.exists(path)]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s)")
    paths = measurements_export.write_case_measurements(
        measurements, outputDirectory, image=image, model=model, quality=table.qualityStatus(tableNode), overwrite=overwrite
    )
    text = json.dumps({"image": image, "model": model, "quality": table.qualityOf(tableNode)}, indent=1, ensure_ascii=False)
    spineIO.write_text(text + "\n", summary)
    where = shownLandmarks.landmarksOf(tableNode)
    if where.get("records"):
        spineIO.write_text(json.dumps(where, indent=1, ensure_ascii=False) + "\n", landmarks)
    elif os.path.exists(landmarks):
        os.remove(landmarks)  # overwriting an export: an older file must not pass for this table's landmarks
    return paths


def dicomIdentifiers(volumeNode) -> dict:
    """PatientID, StudyInstanceUID, SeriesInstanceUID and Modality of a volume loaded from DICOM ("" when unknown):
    from the attributes the module's own DICOM loading sets, else from the subject hierarchy of Slicer's DICOM
    module (series item: UID "DICOM" and attribute "DICOM.Modality"; study UID; patient "DICOM.PatientID")."""
    result = {name: (volumeNode.GetAttribute(f"DICOM.{name}") or "") if volumeNode is not None else "" for name in DICOM_IDENTIFIER_TAGS}
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene) if volumeNode is not None else None
    if shNode is not None:
        series = shNode.GetItemByDataNode(volumeNode)
        study = shNode.GetItemParent(series) if series else 0
        patient = shNode.GetItemParent(study) if study else 0
        found = {
            "SeriesInstanceUID": shNode.GetItemUID(series, "DICOM") if series else "",
            "StudyInstanceUID": shNode.GetItemUID(study, "DICOM") if study else "",
            "PatientID": shNode.GetItemAttribute(patient, "DICOM.PatientID") if patient else "",
            "Modality": shNode.GetItemAttribute(series, "DICOM.Modality") if series else "",
        }
        result.update({key: value for key, value in found.items() if value and not result[key]})
    return result


def exportStructuredMeasurements(measurements, tableNode, volumeNode, path: str, includePatientId: bool = True):
    """One CSV row per value with the DICOM study/series identifiers (``measurements_export``) and the table's quality
    status (the run's labelling checks and the reader's review included); returns the path."""
    return measurements_export.write_structured_csv(
        _needMeasurements(measurements), path, identifiers=dicomIdentifiers(volumeNode), include_patient_id=includePatientId,
        quality=table.qualityStatus(tableNode) or None,
    )


def saveSegmentation(segmentationNode, path: str) -> str:
    """Write the segmentation (names, colours, terminology included) to a .seg.nrrd file."""
    path = os.fspath(path)
    if not path.lower().endswith(".seg.nrrd"):
        path += ".seg.nrrd"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    storageNode = segmentationNode.GetStorageNode()
    if storageNode is None:
        segmentationNode.AddDefaultStorageNode()
        storageNode = segmentationNode.GetStorageNode()
    storageNode.SetFileName(path)
    if not storageNode.WriteData(segmentationNode):
        raise spineErrors.SpineAnalysisError(f"{path}: the segmentation could not be written")
    return path


def _namesByLabel(segmentationNode) -> dict:
    names = segments.segmentNames(segmentationNode)
    return {label: names[sid] for sid, label in segments.segmentLabels(segmentationNode).items()}


def annotatedLevels(partialMap: bool, alsoAnnotated: str = ""):
    """The ``annotated_levels`` of ``annotation.export_training_case`` for the module's *Partial map* choice.

    Unchecked: None, the default rule (every structure the dataset declares and the map leaves out is taught as
    absent), or for a re-exported case the statement of its earlier export. Checked: the case annotates only the
    structures its segmentation holds plus ``alsoAnnotated`` (level names separated by commas or spaces, known
    absent where not outlined); fine-tuning leaves every other structure unknown. A name that is not a level of the
    scheme raises ``InputError`` before anything is written.
    """
    if not partialMap:
        return None
    listed = [item for item in re.split(r"[,;\s]+", alsoAnnotated or "") if item]
    for item in listed:
        try:
            scheme.label_from_name(item)
        except ValueError:
            raise spineErrors.InputError(
                _("'{item}' under 'Also annotated' is not a level name of the scheme (e.g. T12-L1, L5-S1)").format(item=item)
            ) from None
    return [annotation.ONLY_PRESENT, *listed]


def partialMapNote(result, partialMap: bool) -> str:
    """One line on what an exported case annotates when it is a partial map ("" under the default rule); says when
    the statement was kept from the case's earlier export (the box was unchecked)."""
    annotates = result.provenance.get("annotated_labels")
    if annotates is None:
        return ""
    text = _("Partial map: annotates {names} only; fine-tuning leaves every other structure unknown").format(names=", ".join(annotates.values()))
    if not partialMap:
        text += " " + _("(kept from the case's earlier export; the command line's export-training --annotated-levels dataset undoes it)")
    return text


def exportTrainingCase(segmentationNode, volumeNode, datasetDirectory: str, caseId=None, annotator=None, partialMap: bool = False, alsoAnnotated: str = ""):
    """Write the corrected segmentation, the volume and the model's original output into a training dataset
    folder (``SpineAnalysisLib.annotation.export_training_case``); returns its ``ExportResult``.
    ``partialMap``/``alsoAnnotated``: what a partial map annotates (:func:`annotatedLevels`)."""
    if segmentationNode is None or not segments.segmentLabels(segmentationNode):
        raise spineErrors.InputError(_("there is no segmentation to export: segment or load one first"))
    if volumeNode is None:
        raise spineErrors.InputError(_("select the input volume"))
    if not datasetDirectory:
        raise spineErrors.InputError(_("choose a dataset folder"))
    annotated = annotatedLevels(partialMap, alsoAnnotated)
    segments.refuseUnnamedSegments(segmentationNode, volumeNode)
    image = volumes.volumeNodeToSitk(volumeNode)
    corrected = labelmaps.segmentationToLabelMap(segmentationNode, volumeNode)
    original, model = modeloutput.modelOutput(segmentationNode)
    if original is not None and not spineIO.same_grid(original, image):
        original = None  # the volume was moved or resampled after segmentation: the voxels no longer correspond
    caseId = caseId or annotation.case_id_from_path(volumeNode.GetName() or "case")
    return annotation.export_training_case(
        image, corrected, datasetDirectory, caseId, original_label_map=original, model=model, annotator=annotator, names=_namesByLabel(segmentationNode),
        annotated_levels=annotated,
    )


def exportDicomSeg(segmentationNode, volumeNode, path: str, sourceFolder=None, dicomDatabase=None) -> str:
    """Write the segmentation as a DICOM SEG referencing the series the volume was loaded from
    (``SpineAnalysisLib.dicomseg.write_dicom_seg``): segment names and SNOMED codes of the scheme, the model as
    algorithm, and the structures edited since the model run (``annotation.edited_structures``) SEMIAUTOMATIC.

    The series is ``sourceFolder``, the folder "Load DICOM folder..." recorded, or, for a volume from Slicer's DICOM
    browser, its instances found in ``dicomDatabase`` (``dicomsource.SeriesFolder``).
    """
    if segmentationNode is None or not segments.segmentLabels(segmentationNode):
        raise spineErrors.InputError(_("there is no segmentation to export"))
    segments.refuseUnnamedSegments(segmentationNode, volumeNode)
    with dicomsource.SeriesFolder(volumeNode, dicomDatabase) as recorded:
        sourceFolder = sourceFolder or recorded
        if not sourceFolder:
            raise spineErrors.InputError(_("a DICOM SEG needs the source series: load the volume from DICOM (DICOM browser or 'Load DICOM folder...')"))
        labelMap = labelmaps.segmentationToLabelMap(segmentationNode, volumeNode)
        names = _namesByLabel(segmentationNode)
        original, model = modeloutput.modelOutput(segmentationNode)
        if original is not None and not spineIO.same_grid(original, labelMap):
            original = None
        edited = annotation.edited_structures(sitk.GetArrayFromImage(labelMap), sitk.GetArrayFromImage(original) if original is not None else None, names)
        return str(spineDicomSeg.write_dicom_seg(labelMap, sourceFolder, path, names=names, model=model, edited=edited))
