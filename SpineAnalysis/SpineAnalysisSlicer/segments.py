"""Segments named by the label scheme: lookups, colour and terminology from the name, anatomical order,
renaming with a history kept on the node (for undo), and navigation to a level.

Functions that change segments do not pause the segmentation watcher themselves: the Logic wraps them in
``watcher.paused()`` (a change the module makes is not a user's edit).
"""

from __future__ import annotations

import json

import slicer
from SpineAnalysisLib import errors as spineErrors
from SpineAnalysisLib import labels as scheme
from SpineAnalysisLib import relabel as relabelling
from SpineAnalysisLib import segment_scheme

from .compat import _

#: Segmentation node attribute: the names before each Shift/Rename (JSON list), for undo.
RENAME_HISTORY_ATTRIBUTE = "SpineAnalysis.RenameHistory"
HISTORY_LENGTH = 20


def segmentIds(segmentationNode) -> list:
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def segmentNames(segmentationNode) -> dict:
    """Segment ID -> name."""
    segmentation = segmentationNode.GetSegmentation()
    return {sid: segmentation.GetSegment(sid).GetName() for sid in segmentIds(segmentationNode)}


def labelOfSegment(segment):
    """Scheme label of a segment from its name ("L4" -> 23, "L4-L5" -> 123); None for other segments."""
    return segment_scheme.label_of_name(segment.GetName())


def segmentLabels(segmentationNode) -> dict:
    """Segment ID -> scheme label for the segments whose names belong to the scheme."""
    segmentation = segmentationNode.GetSegmentation()
    result = {}
    for segmentId in segmentIds(segmentationNode):
        label = labelOfSegment(segmentation.GetSegment(segmentId))
        if label is not None:
            result[segmentId] = label
    return result


def unnamedSegmentsWithVoxels(segmentationNode, volumeNode) -> list:
    """Names of the segments that hold voxels but whose names are no level of the scheme (e.g. a missed disc painted
    into Slicer's default "Segment_1"): a label map leaves them out, so an export must not go ahead silently."""
    labelled = segmentLabels(segmentationNode)
    return [name for sid, name in segmentNames(segmentationNode).items()
            if sid not in labelled and slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, sid, volumeNode).any()]


def refuseUnnamedSegments(segmentationNode, volumeNode) -> None:
    """Raise ``InputError`` naming the segments :func:`unnamedSegmentsWithVoxels` finds (none: nothing)."""
    unnamed = unnamedSegmentsWithVoxels(segmentationNode, volumeNode)
    if unnamed:
        raise spineErrors.InputError(
            _("{names} hold(s) voxels but is not named as a level (e.g. 'L4' or 'L4-L5'): rename or delete it before "
              "exporting, or its voxels would be left out").format(names=", ".join(f"'{name}'" for name in unnamed)))


def segmentIdByName(segmentationNode, name: str):
    """ID of the segment called ``name`` (also "L4/L5" for "L4-L5"); None when there is none."""
    names = segmentNames(segmentationNode)
    for segmentId, segmentName in names.items():
        if segmentName == name:
            return segmentId
    wanted = segment_scheme.label_of_name(name)
    if wanted is None:
        return None
    for segmentId, label in segmentLabels(segmentationNode).items():
        if label == wanted:
            return segmentId
    return None


def vertebraNames(segmentationNode) -> list:
    """Names of the vertebra segments, cranial to caudal."""
    labels = sorted((label for label in segmentLabels(segmentationNode).values() if scheme.is_vertebra(label)), key=scheme.anatomical_rank)
    return [scheme.vertebra_name(label) for label in labels]


#: Set colour and terminology of a segment from its name; returns its scheme label or None.
applySchemeToSegment = segment_scheme.apply_scheme_to_segment


def applyScheme(segmentationNode) -> None:
    """:func:`applySchemeToSegment` on every segment, and segments ordered cranial to caudal."""
    segmentation = segmentationNode.GetSegmentation()
    ranked = []
    for segmentId in segmentIds(segmentationNode):
        label = applySchemeToSegment(segmentation.GetSegment(segmentId))
        rank = scheme.anatomical_rank(label) if label is not None and (scheme.is_vertebra(label) or scheme.is_disc(label)) else 1e3 + (label or 1e3)
        ranked.append((rank, segmentId))
    for index, (_rank, segmentId) in enumerate(sorted(ranked)):
        if segmentation.GetSegmentIndex(segmentId) != index:
            segmentation.SetSegmentIndex(segmentId, index)


# -- renaming -------------------------------------------------------------------------------------------
def renameSegments(segmentationNode, names: dict) -> None:
    """Rename segments (ID -> new name); colour, terminology and order follow."""
    segmentation = segmentationNode.GetSegmentation()
    for segmentId, name in names.items():
        segment = segmentation.GetSegment(segmentId)
        if segment is not None:
            segment.SetName(name)
    applyScheme(segmentationNode)


def relabel(segmentationNode, mapping: dict) -> dict:
    """Rename vertebrae by ``mapping`` (discs follow), keeping the previous names for :func:`undoRelabel`.

    Raises ValueError (changing nothing) when anatomy forbids the result (``SpineAnalysisLib.relabel``).
    Returns ``{old name: new name}``.
    """
    renames = relabelling.plan_relabel(segmentNames(segmentationNode), mapping)
    if renames:
        history = renameHistory(segmentationNode)[-(HISTORY_LENGTH - 1):] + [{sid: old for sid, (old, _new) in renames.items()}]
        segmentationNode.SetAttribute(RENAME_HISTORY_ATTRIBUTE, json.dumps(history))
    renameSegments(segmentationNode, {sid: new for sid, (_old, new) in renames.items()})
    return {old: new for old, new in renames.values()}


def renameHistory(segmentationNode) -> list:
    """Names before each rename still undoable, oldest first (saved with the scene)."""
    try:
        return json.loads(segmentationNode.GetAttribute(RENAME_HISTORY_ATTRIBUTE) or "[]")
    except ValueError:
        return []


def undoRelabel(segmentationNode) -> dict:
    """Give back the names before the last rename; returns ``{name now: name again}``."""
    history = renameHistory(segmentationNode)
    if not history:
        raise ValueError("there is no rename to undo")
    names = history.pop()
    segmentationNode.SetAttribute(RENAME_HISTORY_ATTRIBUTE, json.dumps(history))
    segmentation = segmentationNode.GetSegmentation()
    present = {sid: name for sid, name in names.items() if segmentation.GetSegment(sid) is not None}
    renamed = {segmentation.GetSegment(sid).GetName(): name for sid, name in present.items()}
    renameSegments(segmentationNode, present)
    return renamed


# -- navigation -----------------------------------------------------------------------------------------
def levelCentroidRAS(segmentationNode, segmentName: str):
    """Centre (RAS, mm) of the named segment."""
    segmentId = segmentIdByName(segmentationNode, segmentName)
    if segmentId is None:
        raise spineErrors.InputError(_("there is no segment called {name}").format(name=segmentName))
    center = segmentationNode.GetSegmentCenterRAS(segmentId)
    if center is None:
        raise spineErrors.InputError(_("{name} is empty").format(name=segmentName))
    return tuple(float(c) for c in center)


def jumpToLevel(segmentationNode, segmentName: str, centered: bool = True):
    """Move every slice view to the centre of the named segment; returns that point (RAS)."""
    r, a, s = levelCentroidRAS(segmentationNode, segmentName)
    mode = slicer.vtkMRMLSliceNode.CenteredJumpSlice if centered else slicer.vtkMRMLSliceNode.OffsetJumpSlice
    slicer.vtkMRMLSliceNode.JumpAllSlices(slicer.mrmlScene, r, a, s, mode)
    return (r, a, s)


def show3D(segmentationNode) -> None:
    """Show the segments as surfaces in the 3D views."""
    segmentationNode.CreateClosedSurfaceRepresentation()
    displayNode = segmentationNode.GetDisplayNode()
    if displayNode is not None:
        displayNode.SetVisibility3D(True)
