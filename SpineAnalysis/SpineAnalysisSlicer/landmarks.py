"""Where the values of one table row were measured, shown in the views as markups.

The library gives the landmarks of every measured value (``SpineAnalysisLib.measure.landmark_points``, the content
of landmarks.json) in patient **LPS** millimetres; they are kept on the table node (``LANDMARKS_ATTRIBUTE``, saved
with the scene, merged like the rows when only some structures are measured again). Clicking a row shows that row's
landmarks: one point list (the corners, named "L3 AS" ...) and one line per segment and endplate line ("L3 middle
height", "L3-L4 anterior height", "L3 inferior endplate" ...), replacing the previous row's. Markups are in **RAS**
(Slicer's world): ``SpineAnalysisLib.landmark_markups.add_row`` negates x and y explicitly. They are locked: moving one would not change a value.
When the table is measured again (an edit of the segmentation) the shown landmarks are hidden and drawn again from
the new ones; a row whose values are no longer measured shows nothing.
"""

from __future__ import annotations

import json

import slicer
from SpineAnalysisLib import landmark_markups

from . import table

#: Table node attribute: the landmarks of its measurements (landmarks.json's content, LPS mm).
LANDMARKS_ATTRIBUTE = "SpineAnalysis.Landmarks"
#: Table node attribute: the row whose landmarks are shown, "structure|level" (absent: none).
SHOWN_ATTRIBUTE = "SpineAnalysis.LandmarksShown"
#: Markups node attribute: the ID of the table node whose landmarks it shows.
OF_TABLE_ATTRIBUTE = "SpineAnalysis.LandmarksOf"


def landmarksOf(tableNode) -> dict:
    """The landmarks stored on ``tableNode`` (an empty record list when there are none)."""
    text = tableNode.GetAttribute(LANDMARKS_ATTRIBUTE) if tableNode is not None else None
    try:
        return json.loads(text) if text else {"records": []}
    except ValueError:
        return {"records": []}


def storeLandmarks(tableNode, landmarks: dict, labels=None) -> None:
    """Keep ``landmarks`` on ``tableNode``. With ``labels`` only those structures were measured again: the other
    records (spine rows included) are kept, as ``table.MeasurementTables.show`` keeps their rows."""
    if labels is not None:
        wanted = set(labels)
        fresh = {(r["structure"], r["level"]) for r in landmarks.get("records", [])}
        kept = [r for r in landmarksOf(tableNode).get("records", [])
                if r.get("label") not in wanted and (r["structure"], r["level"]) not in fresh]
        landmarks = {**landmarks, "records": kept + list(landmarks.get("records", []))}
    tableNode.SetAttribute(LANDMARKS_ATTRIBUTE, json.dumps(landmarks))


def rowOf(tableNode, row: int):
    """(structure, level) of a table row, or None."""
    level = table.structureNameOfRow(tableNode, row)
    types = tableNode.GetTable().GetColumnByName(table.TYPE_COLUMN) if tableNode is not None else None
    if level is None or types is None:
        return None
    return types.GetValue(row), level


def markupsOf(tableNode) -> list:
    """The markups nodes that show landmarks of ``tableNode``."""
    nodes = []
    for className in ("vtkMRMLMarkupsFiducialNode", "vtkMRMLMarkupsLineNode"):
        collection = slicer.mrmlScene.GetNodesByClass(className)
        for i in range(collection.GetNumberOfItems()):
            node = collection.GetItemAsObject(i)
            if node.GetAttribute(OF_TABLE_ATTRIBUTE) == tableNode.GetID():
                nodes.append(node)
    return nodes


def shownRow(tableNode):
    """(structure, level) whose landmarks are shown for ``tableNode``, or None."""
    text = tableNode.GetAttribute(SHOWN_ATTRIBUTE) if tableNode is not None else None
    return tuple(text.split("|", 1)) if text else None


def clear(tableNode) -> None:
    """Remove the markups of ``tableNode``'s landmarks (the row stays remembered as shown)."""
    for node in markupsOf(tableNode):
        slicer.mrmlScene.RemoveNode(node)


def hide(tableNode) -> None:
    """Hide the landmarks shown for ``tableNode`` (their nodes stay until a row is shown again)."""
    for node in markupsOf(tableNode):
        node.GetDisplayNode().SetVisibility(False)


def showRow(tableNode, structure: str, level: str) -> list:
    """Show the landmarks of the row (``structure``, ``level``), replacing the previous row's; returns the markups
    nodes (none when the row's values have no landmarks: each record's ``withheld`` says why)."""
    clear(tableNode)
    tableNode.SetAttribute(SHOWN_ATTRIBUTE, f"{structure}|{level}")
    nodes = landmark_markups.add_row(slicer.mrmlScene, landmarksOf(tableNode), structure, level)
    for node in nodes:
        node.SetAttribute(OF_TABLE_ATTRIBUTE, tableNode.GetID())
    return nodes


def refresh(tableNode) -> list:
    """After ``tableNode`` was measured again: hide what was shown and draw the same row from the new landmarks."""
    hide(tableNode)
    shown = shownRow(tableNode)
    return showRow(tableNode, *shown) if shown else []
