"""Label maps <-> segmentations: the scheme's colour table, importing a label map as named segments, and
exporting segments back to scheme label values on a volume's grid."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
from SpineAnalysisLib import errors as spineErrors
from SpineAnalysisLib import imageio as spineIO
from SpineAnalysisLib import labels as scheme
from SpineAnalysisLib.segment_export import segments_to_label_array

from . import segments, terminology, volumes
from .compat import _

COLOR_TABLE_NAME = "SpineAnalysis labels"
COLOR_TABLE_ATTRIBUTE = "SpineAnalysis.LabelScheme"


def getColorTableNode():
    """The colour table of the label scheme (label value -> name, colour, terminology); created once per scene."""
    for node in volumes.nodesOfClass("vtkMRMLColorTableNode"):
        if node.GetAttribute(COLOR_TABLE_ATTRIBUTE) == "1":
            return node
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLColorTableNode", COLOR_TABLE_NAME)
    node.SetAttribute(COLOR_TABLE_ATTRIBUTE, "1")
    fillColorTable(node, {label: scheme.structure_name(label) for label in scheme.all_labels()})
    return node


def fillColorTable(node, names: dict) -> None:
    """Make ``node`` a table of ``names`` (label value -> name) with the scheme's colours and codes."""
    wasModified = node.StartModify()
    node.SetTypeToUser()
    node.SetNumberOfColors(max(names) + 1 if names else 1)
    node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for index in range(1, node.GetNumberOfColors()):
        node.SetColor(index, "", 0.0, 0.0, 0.0, 0.0)
        node.SetColorDefined(index, False)  # Slicer >= 5.4
    for label, name in names.items():
        structure = scheme.structure(label)
        node.SetColor(label, name, *structure.color, 1.0)
        if hasattr(node, "SetTerminology"):  # colour tables carry terminology in newer Slicer versions only
            node.SetTerminology(label, *terminology.CATEGORY, "SCT", structure.snomed_code, structure.snomed_meaning)
    node.EndModify(wasModified)


def importLabelMap(labelMap, volumeNode, segmentationNode=None, name=None):
    """Turn a label map (SimpleITK image or labelmap volume node) into named segments.

    The label values must belong to the scheme. ``segmentationNode`` is emptied and refilled when given
    (scripts only: the module's own actions always create a new node), otherwise created. The input volume
    becomes the segmentation's reference geometry.
    """
    ownsNode = isinstance(labelMap, sitk.Image)
    labelImage = labelMap if ownsNode else volumes.volumeNodeToSitk(labelMap)
    spineIO.check_label_map(labelImage, what=_("label map"))  # scheme labels only, not empty
    labelNode = volumes.sitkToVolumeNode(labelImage, name="__SpineAnalysisLabels__", labelmap=True) if ownsNode else labelMap
    try:
        labelNode.CreateDefaultDisplayNodes()
        labelNode.GetDisplayNode().SetAndObserveColorNodeID(getColorTableNode().GetID())
        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or f"{volumeNode.GetName()} segmentation")
            segmentationNode.CreateDefaultDisplayNodes()
        else:
            segmentationNode.GetSegmentation().RemoveAllSegments()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelNode, segmentationNode):
            raise spineErrors.InputError(_("the label map could not be imported into a segmentation"))
    finally:
        if ownsNode:
            volumes.removeNode(labelNode)
    segments.applyScheme(segmentationNode)
    volumes.placeNextTo(segmentationNode, volumeNode)
    return segmentationNode


def segmentationToLabelArray(segmentationNode, volumeNode) -> np.ndarray:
    """Label values (scheme ids, from segment names) on the volume's voxel grid, as a (k, j, i) array.

    Segments whose names are not in the scheme are left out.
    """
    labels = segments.segmentLabels(segmentationNode)
    if not labels:
        return np.zeros(slicer.util.arrayFromVolume(volumeNode).shape, dtype=np.uint16)
    try:
        return segments_to_label_array(slicer.modules.segmentations.logic(), segmentationNode, labels, volumeNode)
    except spineErrors.InputError:
        raise spineErrors.InputError(_("the segmentation could not be exported to a label map")) from None


def segmentationToLabelMap(segmentationNode, volumeNode) -> sitk.Image:
    """:func:`segmentationToLabelArray` as a SimpleITK label map on the grid of ``volumeNode``."""
    reference = volumes.volumeNodeToSitk(volumeNode)
    return spineIO.label_map_like(segmentationToLabelArray(segmentationNode, volumeNode), reference)


def segmentationsOfVolume(volumeNode) -> list:
    """Segmentation nodes whose reference geometry is ``volumeNode``, oldest first."""
    if volumeNode is None:
        return []
    role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    return [node for node in volumes.nodesOfClass("vtkMRMLSegmentationNode") if node.GetNodeReferenceID(role) == volumeNode.GetID()]


def segmentationForVolume(volumeNode, current=None):
    """The segmentation to show with ``volumeNode``: ``current`` when it belongs to that volume (or to none),
    else the volume's newest segmentation, else None (never another volume's, which a run would overwrite)."""
    if volumeNode is None or current is None:
        return current
    reference = current.GetNodeReferenceID(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
    if not reference or reference == volumeNode.GetID():
        return current
    own = segmentationsOfVolume(volumeNode)
    return own[-1] if own else None


def newSegmentationName(volumeNode) -> str:
    return slicer.mrmlScene.GenerateUniqueName(f"{volumeNode.GetName()} segmentation")
