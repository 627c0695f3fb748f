"""Where the values of the clicked table row were measured, shown in the review page's views as markups.

The same content and rules as the Slicer module (``SpineAnalysis/SpineAnalysisSlicer/landmarks.py``): the
landmarks come from the measurement that made the table (:func:`SpineAnalysisLib.measurements.measure_case_with_landmarks`,
the content of landmarks.json, patient **LPS** mm); a row click shows that row's
(:func:`SpineAnalysisLib.measure.landmark_points.row_shapes`): one locked point list of the body corners ("L3 AS" ...)
and one locked line per height and endplate line ("L3 middle height", "L3 inferior endplate" ...), replacing the
previous row's. Markups are in **RAS** (Slicer's world): :func:`SpineAnalysisLib.imageio.lps_to_ras`, explicitly.
They are drawn in the slice view of their plane (sagittal; the Cobb angle's coronal endplate lines in the coronal
view) and in 3D, projected onto the shown slice as report.png projects them: each body's corners lie in its own
mid-sagittal plane, which the slice a row click centres on (the segment's centre, voxel-snapped) may miss by a mm.
When the table is measured again (an edit) the shown row is drawn again from the new landmarks, and shows nothing
when its values are no longer measured (withheld).
"""

from __future__ import annotations

from .. import landmark_markups
from ..measure import landmark_points

#: markups node attribute marking the page's landmark nodes (value: "structure|level" of their row)
ROW_ATTRIBUTE = "SpineAnalysis.LandmarksRow"


class LandmarkMarkups:
    """The landmarks of one table row as locked markups on a trame-slicer scene."""

    def __init__(self, scene):
        self.scene = scene
        self.landmarks: dict = landmark_points.empty("nothing measured")
        self.row: tuple[str, str] | None = None  # (structure, level) shown
        self.nodes: list = []
        self.visible = True

    def update(self, landmarks: dict) -> list:
        """New landmarks (the table was measured again): the shown row is drawn again from them."""
        self.landmarks = landmarks
        return self.show(*self.row) if self.row else []

    def show(self, structure: str, level: str) -> list:
        """Show the landmarks of the row (``structure``, ``level``), replacing the previous row's; returns the nodes
        (none when none of the row's values has landmarks)."""
        self.clear()
        self.row = (structure, level)
        self.nodes = landmark_markups.add_row(self.scene, self.landmarks, structure, level)
        for node in self.nodes:
            node.SetAttribute(ROW_ATTRIBUTE, "|".join(self.row))
            node.GetDisplayNode().SetVisibility(self.visible)
        return list(self.nodes)

    def note(self) -> str:
        """What the views show for the clicked row, or why nothing ("" before a click)."""
        if self.row is None:
            return ""
        structure, level = self.row
        points = sum(n.GetNumberOfControlPoints() for n in self.nodes if n.IsA("vtkMRMLMarkupsFiducialNode"))
        lines = sum(1 for n in self.nodes if n.IsA("vtkMRMLMarkupsLineNode"))
        if points or lines:
            shown = [f"{count} {what}{'s' if count > 1 else ''}" for count, what in ((points, "corner"), (lines, "line")) if count]
            return f"{level}: {' and '.join(shown)} where its values were measured"
        reasons = {why for r in landmark_points.records_of(self.landmarks, structure, level) for why in r.get("withheld", {}).values()}
        return f"{level}: nothing to show" + (f" ({'; '.join(sorted(reasons))})" if reasons else " (none of its values is measured)")

    def set_visible(self, visible: bool) -> None:
        self.visible = bool(visible)
        for node in self.nodes:
            node.GetDisplayNode().SetVisibility(self.visible)

    def clear(self) -> None:
        """Remove the shown markups (the row stays remembered: the next measurement draws it again)."""
        for node in self.nodes:
            if node.GetScene() is not None:
                self.scene.RemoveNode(node)
        self.nodes = []

    def reset(self) -> None:
        """Another image or segmentation: no landmarks, no row."""
        self.clear()
        self.row = None
        self.landmarks = landmark_points.empty("nothing measured")
