"""How landmark markups look, the same in the Slicer module and on the review page (both MRML scenes).

Corners and the lines of heights are yellow, the endplate lines that angles use cyan. A landmark node is shown in the
slice view of its plane (sagittal; the Cobb angle's coronal endplate lines in the coronal view) and in the 3D views,
**projected** onto the shown slice: each body's corners lie in its own mid-sagittal plane, which the slice a row
click centres on (the segment's centre, voxel-snapped) may miss by a millimetre, and an unprojected markup off the
slice is not drawn at all (0 pixels on the review page before projection). report.png projects them the same way.
"""

from __future__ import annotations

from .imageio import lps_to_ras
from .measure import landmark_points

#: colours (0-1 RGB) by kind of landmark: "point" corners, "segment" heights, "line" endplate lines for angles
COLORS = {"point": (1.0, 0.85, 0.1), "segment": (1.0, 0.85, 0.1), "line": (0.2, 0.9, 1.0)}
#: the slice view (its slice node's layout name, as in Slicer's default layouts) that shows landmarks of each plane
PLANE_VIEWS = {"sagittal": "Yellow", "coronal": "Green"}


def plane_of(name: str) -> str:
    """The plane a landmark node named ``name`` lies in ("coronal" for the Cobb angle's endplate lines)."""
    return "coronal" if name.endswith(landmark_points.CORONAL) else "sagittal"


def view_ids(scene, plane: str) -> list:
    """IDs of the views of ``scene`` that show landmarks of ``plane``: that plane's slice view and the 3D views
    (none found, e.g. a scene without a layout: an empty list, and the node shows in every view)."""
    ids = []
    for class_name in ("vtkMRMLSliceNode", "vtkMRMLViewNode"):
        views = scene.GetNodesByClass(class_name)
        for i in range(views.GetNumberOfItems()):
            view = views.GetItemAsObject(i)
            if class_name == "vtkMRMLViewNode" or view.GetLayoutName() == PLANE_VIEWS[plane]:
                ids.append(view.GetID())
    return ids


def style(node, kind: str) -> None:
    """Lock ``node`` (a markups node with its default display node; moving it would not change a value) and give its
    display the colour of ``kind``, the sizes, the projection and the views of its plane."""
    node.SetLocked(True)
    display = node.GetDisplayNode()
    display.SetSelectedColor(*COLORS[kind])
    display.SetColor(*COLORS[kind])
    display.SetGlyphScale(1.5)
    display.SetTextScale(2.0)
    display.SetSliceProjection(True)
    display.SetSliceProjectionUseFiducialColor(True)
    display.SetSliceProjectionOpacity(1.0)
    for view_id in view_ids(node.GetScene(), plane_of(node.GetName())):
        display.AddViewNodeID(view_id)


def add_row(scene, landmarks: dict, structure: str, level: str) -> list:
    """Add the markups of one table row (``structure``, ``level``; :func:`.landmark_points.row_shapes`) to ``scene``,
    in RAS (``landmarks`` are LPS, converted here explicitly): one point list of the corners ("L3 landmarks") and one
    line per height and endplate line, each styled by :func:`style`; returns the new nodes (none when none of the
    row's values has landmarks)."""
    points, lines = landmark_points.row_shapes(landmarks, structure, level)
    nodes = []

    def new(class_name: str, name: str, kind: str):
        node = scene.AddNewNodeByClass(class_name, name)
        node.CreateDefaultDisplayNodes()
        style(node, kind)
        nodes.append(node)
        return node

    if points:
        node = new("vtkMRMLMarkupsFiducialNode", f"{level} landmarks", "point")
        for name, point in points.items():
            node.AddControlPoint(*lps_to_ras(point), name)
    for name, (start, end, kind) in lines.items():
        node = new("vtkMRMLMarkupsLineNode", name, kind)
        node.AddControlPoint(*lps_to_ras(start), "")
        node.AddControlPoint(*lps_to_ras(end), "")
    return nodes
