"""Loading an MRI (file or DICOM folder) and, optionally, its segmentation (label image, .seg.nrrd or DICOM SEG).

Segments of a loaded ``.seg.nrrd`` are named by our scheme here (``adoptSegmentation``): the place where
segmentations named by other tools (e.g. SlicerTotalSegmentator, ``SpineAnalysisLib.label_schemes``) are
recognised and mapped to our names.
"""

from __future__ import annotations

import os

import slicer
from SpineAnalysisLib import dicomseg as spineDicomSeg
from SpineAnalysisLib import errors as spineErrors
from SpineAnalysisLib import imageio as spineIO

from . import dicomsource, labelmaps, segments, volumes


def loadVolume(imagePath: str):
    """A volume node from an image file, or from a folder holding one DICOM series (its identifiers and folder kept)."""
    imagePath = os.fspath(imagePath)
    name = volumes.baseName(imagePath)
    if os.path.isdir(imagePath):
        image = spineIO.read_image(imagePath)
        volumeNode = volumes.sitkToVolumeNode(image, name=name)
        for attribute, value in spineIO.dicom_identifiers(image).items():  # kept for the structured measurement export
            if value:
                volumeNode.SetAttribute(f"DICOM.{attribute}", value)
        volumeNode.SetAttribute(dicomsource.FOLDER_ATTRIBUTE, os.path.abspath(imagePath))  # the source series of a DICOM SEG
        return volumeNode
    if not os.path.isfile(imagePath):
        raise spineErrors.InputError(f"{imagePath}: no such file")
    volumeNode = slicer.modules.volumes.logic().AddArchetypeVolume(imagePath, name, 0)
    if volumeNode is None:
        raise spineErrors.InputError(f"{imagePath}: Slicer could not read this image")
    return volumeNode


def adoptSegmentation(segmentationNode, volumeNode) -> None:
    """Make a segmentation from a file ours: reference geometry, scheme colours/terminology, place in the hierarchy."""
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    segments.applyScheme(segmentationNode)
    volumes.placeNextTo(segmentationNode, volumeNode)


def loadSegmentation(labelPath: str, volumeNode):
    """A segmentation node of ``volumeNode`` from a label image, a .seg.nrrd or a DICOM SEG (.dcm)."""
    labelPath = os.fspath(labelPath)
    if not os.path.isfile(labelPath):
        raise spineErrors.InputError(f"{labelPath}: no such file")
    name = f"{volumeNode.GetName()} segmentation"
    lower = labelPath.lower()
    if lower.endswith(".dcm"):  # a DICOM SEG of this image
        labelImage, names = spineDicomSeg.read_dicom_seg(labelPath, volumes.volumeNodeToSitk(volumeNode))
        segmentationNode = labelmaps.importLabelMap(labelImage, volumeNode, name=name)
        current = segments.segmentNames(segmentationNode)
        renames = {sid: names[label] for sid, label in segments.segmentLabels(segmentationNode).items()
                   if names.get(label) and current[sid] != names[label]}  # fmt: skip  (e.g. "L5-L6" above a transitional L6)
        segments.renameSegments(segmentationNode, renames)
        return segmentationNode
    if lower.endswith(".seg.nrrd"):
        segmentationNode = slicer.modules.segmentations.logic().LoadSegmentationFromFile(labelPath, True)
        if segmentationNode is None:
            raise spineErrors.InputError(f"{labelPath}: Slicer could not read this segmentation")
        adoptSegmentation(segmentationNode, volumeNode)
        return segmentationNode
    labelNode = slicer.modules.volumes.logic().AddArchetypeVolume(labelPath, volumes.baseName(labelPath), 1)
    if labelNode is None:
        raise spineErrors.InputError(f"{labelPath}: Slicer could not read this label map")
    try:
        return labelmaps.importLabelMap(labelNode, volumeNode, name=name)
    finally:
        volumes.removeNode(labelNode)
