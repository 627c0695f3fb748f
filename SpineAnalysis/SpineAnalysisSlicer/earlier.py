"""Segmenting a volume again: the new segmentation takes over, and the volume's earlier segmentations (with every
correction in them) are kept, never deleted without asking, but hidden and named as the earlier ones, so that two
segmentations are never drawn on top of each other and the name, the table and the views the user sees are the new
one's."""

from __future__ import annotations

import slicer

from . import labelmaps, landmarks, table
from .compat import _

#: Segmentation node attribute of a segmentation set aside: the ID of the newer one that took over.
SUPERSEDED_BY_ATTRIBUTE = "SpineAnalysis.SupersededBy"
#: Segmentation node attribute of a new segmentation: the IDs of the earlier ones it set aside (space separated).
SET_ASIDE_ATTRIBUTE = "SpineAnalysis.SetAside"


def _freeName(base: str) -> str:
    """``base``, or ``base`` with the first free number ("X (earlier 2)") when a node has that name already."""
    name, number = base, 1
    while slicer.mrmlScene.GetNodesByName(name).GetNumberOfItems():
        number += 1
        name = base[:-1] + f" {number})" if base.endswith(")") else f"{base} {number}"
    return name


def setAside(newNode, volumeNode) -> list:
    """Hide every other segmentation of ``volumeNode``; one not set aside before is renamed "<name> (earlier)", and so
    are the tables measuring it. ``newNode`` takes the volume's plain segmentation name when that is free. Returns the
    segmentations set aside (oldest first); nothing is removed."""
    earlier = [node for node in labelmaps.segmentationsOfVolume(volumeNode) if node is not newNode]
    for node in earlier:
        display = node.GetDisplayNode()
        if display is not None:
            display.SetVisibility(False)
        for tableNode in table.tablesOfSegmentation(node):
            landmarks.hide(tableNode)  # where its values were measured is not drawn over the new segmentation either
        if node.GetAttribute(SUPERSEDED_BY_ATTRIBUTE):
            continue  # named as an earlier one already
        tables = table.tablesOfSegmentation(node)
        node.SetName(_freeName(_("{name} (earlier)").format(name=node.GetName())))
        for tableNode in tables:
            tableNode.SetName(_freeName(_("{name} (earlier)").format(name=tableNode.GetName())))
        node.SetAttribute(SUPERSEDED_BY_ATTRIBUTE, newNode.GetID())
    plain = f"{volumeNode.GetName()} segmentation"
    if earlier and newNode.GetName() != plain and not slicer.mrmlScene.GetNodesByName(plain).GetNumberOfItems():
        newNode.SetName(plain)
    newNode.SetAttribute(SET_ASIDE_ATTRIBUTE, " ".join(node.GetID() for node in earlier))
    return earlier


def note(segmentationNode) -> str:
    """The line that says which earlier segmentations ``segmentationNode`` set aside ("" when none)."""
    ids = (segmentationNode.GetAttribute(SET_ASIDE_ATTRIBUTE) or "").split() if segmentationNode is not None else []
    names = [node.GetName() for node in (slicer.mrmlScene.GetNodeByID(i) for i in ids) if node is not None]
    if not names:
        return ""
    text = _("The earlier segmentation of this volume is kept, hidden: {names} (show it in the Data module).") if len(names) == 1 else _(
        "The earlier segmentations of this volume are kept, hidden: {names} (show them in the Data module).")
    return text.format(names=", ".join(f"'{name}'" for name in names))
