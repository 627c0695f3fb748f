"""Clicking a table row shows where its values were measured, on real MRML scenes (slicer-core).

The landmarks come from the library in LPS; Slicer's markups are RAS. The phantom (phantoms.py) lies off the
patient origin in every axis and is written on an oblique grid, so a missing or doubled sign change moves the
points by tens of millimetres: they are checked against the phantom's known corners and against the segment's own
centroid as Slicer computes it (RAS), which does not go through the library's conversion at all.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import phantoms as ph
from test_slicer_workflow import _erase_superior_mm

#: L1-S1, lordotic (about 40 degrees), the mid-sagittal planes 12 mm left of the origin, the bodies 30-110 mm anterior
PHANTOM = dict(levels=(20, 21, 22, 23, 24, 26), heights=26.0, discs=[(11, 8), (12, 8), (13, 8), (14, 8), (15, 7)], top_angle=12.0,
               top=(30.0, 90.0), x_center=12.0, csf=False)
SPACING, DIRECTION = (1.0, 1.0, 1.0), ph.oblique(12.0, axis=(0.2, 0.3, 0.9), base=ph.RAS_DIRECTION)


@pytest.fixture
def measured(logic, tmp_path):
    phantom = ph.build_spine(**PHANTOM)
    label_map, image = ph.render_phantom(phantom, SPACING, DIRECTION)
    sitk.WriteImage(image, str(tmp_path / "image.nii.gz"))
    sitk.WriteImage(label_map, str(tmp_path / "labels.nii.gz"))
    volume, segmentation = logic.loadInputs(str(tmp_path / "image.nii.gz"), str(tmp_path / "labels.nii.gz"))
    table = logic.updateTable(segmentation, volume)
    return phantom, volume, segmentation, table


def _row(table, structure, level):
    from SpineAnalysisSlicer import landmarks

    for row in range(table.GetNumberOfRows()):
        if landmarks.rowOf(table, row) == (structure, level):
            return row
    raise AssertionError(f"no row {structure} {level}")


def _points(node) -> dict:
    out = {}
    for i in range(node.GetNumberOfControlPoints()):
        position = [0.0, 0.0, 0.0]
        node.GetNthControlPointPosition(i, position)
        out[node.GetNthControlPointLabel(i)] = np.array(position)
    return out


def _truth_ras(phantom, vertebra, corner) -> np.ndarray:
    a, s = getattr(phantom.bodies[vertebra], corner)
    x, y, z = ph.to_lps(a, s, phantom.x_center)
    return np.array([-x, -y, z])


def _nodes(nodes, className):
    return [n for n in nodes if n.IsA(className)]


def test_a_vertebra_row_shows_its_corners_and_middle_height_in_ras(logic, measured):
    import slicer

    phantom, volume, segmentation, table = measured
    nodes = logic.showLandmarks(table, _row(table, "vertebra", "L3"))
    (points,) = _nodes(nodes, "vtkMRMLMarkupsFiducialNode")
    corners = _points(points)
    assert set(corners) == {"L3 AS", "L3 AI", "L3 PS", "L3 PI"}
    for name, position in corners.items():
        error = np.linalg.norm(position - _truth_ras(phantom, 22, name.split()[1]))
        assert error <= 1.0, (name, position, error)  # one voxel
    # independent of the conversion: the corners surround the segment's centroid as Slicer computes it (RAS)
    centroid = np.asarray(logic.levelCentroidRAS(segmentation, "L3"))
    assert np.linalg.norm(np.mean(list(corners.values()), axis=0)[:2] - centroid[:2]) < 1.5
    (chord,) = _nodes(nodes, "vtkMRMLMarkupsLineNode")
    assert chord.GetName() == "L3 middle height"
    assert chord.GetLineLengthWorld() == pytest.approx(logic.tableValue(table, "L3", "height_middle_mm"), abs=1e-3)
    assert points.GetLocked() and chord.GetLocked()  # moving a landmark would not change a value
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLMarkupsFiducialNode").GetNumberOfItems() == 1


def test_a_disc_row_replaces_the_previous_rows_landmarks_with_its_endplate_lines(logic, measured):
    phantom, volume, segmentation, table = measured
    first = logic.showLandmarks(table, _row(table, "vertebra", "L3"))
    nodes = logic.showLandmarks(table, _row(table, "disc", "L3-L4"))
    assert all(node.GetScene() is None for node in first)  # the previous row's markups are gone
    assert set(logic.landmarkNodes(table)) == set(nodes)
    lines = {n.GetName(): n for n in _nodes(nodes, "vtkMRMLMarkupsLineNode")}
    assert set(lines) == {"L3 inferior endplate", "L4 superior endplate", "L3-L4 anterior height", "L3-L4 middle height",
                          "L3-L4 posterior height"}
    endplate = lines["L3 inferior endplate"]
    back, front = (np.array(endplate.GetNthControlPointPositionWorld(i)) for i in (0, 1))
    truth_back, truth_front = _truth_ras(phantom, 22, "PI"), _truth_ras(phantom, 22, "AI")
    direction = (front - back) / np.linalg.norm(front - back)
    truth = (truth_front - truth_back) / np.linalg.norm(truth_front - truth_back)
    assert np.degrees(np.arccos(np.clip(direction @ truth, -1, 1))) < 2.5  # posterior to anterior, in RAS
    height = lines["L3-L4 anterior height"]
    assert height.GetLineLengthWorld() == pytest.approx(logic.tableValue(table, "L3-L4", "height_anterior_mm"), abs=1e-3)
    (points,) = _nodes(nodes, "vtkMRMLMarkupsFiducialNode")
    assert set(_points(points)) == {"L3 AI", "L3 PI", "L4 AS", "L4 PS"}


def test_after_an_edit_the_shown_landmarks_are_drawn_again_from_the_new_measurement(logic, measured):
    phantom, volume, segmentation, table = measured
    logic.observeSegmentation(segmentation, volume, table)
    shown = logic.showLandmarks(table, _row(table, "vertebra", "L4"))
    before = _points(_nodes(shown, "vtkMRMLMarkupsFiducialNode")[0])
    erased = _erase_superior_mm(logic, segmentation, volume, "L4", 4.0)
    assert logic.recomputeDirty() is table
    nodes = logic.landmarkNodes(table)
    assert all(node.GetScene() is None for node in shown)  # the landmarks of before the edit are not shown any more
    (points,) = _nodes(nodes, "vtkMRMLMarkupsFiducialNode")
    after = _points(points)
    assert all(n.GetDisplayNode().GetVisibility() for n in nodes)
    # the top of L4 went down (the erased slices lie across its tilted endplate: one corner moves more), not its bottom
    assert max(before[c][2] - after[c][2] for c in ("L4 AS", "L4 PS")) > 0.5 * erased
    record = [r for r in logic.landmarksOfTable(table)["records"] if (r["structure"], r["level"]) == ("vertebra", "L4")][0]
    x, y, z = record["points"]["L4 AS"]
    assert np.allclose(after["L4 AS"], [-x, -y, z], atol=1e-3)  # drawn from the new landmarks
    assert all(np.linalg.norm(after[c] - before[c]) < 1.0 for c in ("L4 AI", "L4 PI"))
    logic.stopObserving()


def test_spine_rows_show_the_endplate_lines_of_their_angles_and_a_row_without_landmarks_shows_nothing(logic, measured):
    phantom, volume, segmentation, table = measured
    logic.showLandmarks(table, _row(table, "vertebra", "L3"))
    nodes = logic.showLandmarks(table, _row(table, "spine", "L1-S1"))  # lordosis and the Cobb angle share the row
    names = {n.GetName() for n in nodes}
    (cobb,) = [r for r in logic.landmarksOfTable(table)["records"] if r["level"] == "L1-S1" and "cobb_max_deg" in r["values"]]
    assert names == {"L1 superior endplate", "S1 superior endplate", *cobb["values"]["cobb_max_deg"]}
    assert len(names) == 4 and all(n.IsA("vtkMRMLMarkupsLineNode") for n in nodes)
    assert logic.showLandmarks(table, _row(table, "vertebra", "L3")) and logic.landmarkNodes(table)
    table.SetAttribute(landmarks_module().LANDMARKS_ATTRIBUTE, '{"records": []}')  # as for a row whose values were withheld
    assert logic.showLandmarks(table, _row(table, "vertebra", "L3")) == [] and logic.landmarkNodes(table) == []


def landmarks_module():
    from SpineAnalysisSlicer import landmarks

    return landmarks


def test_segmenting_again_hides_the_earlier_tables_landmarks(logic, measured, tmp_path):
    from SpineAnalysisSlicer import earlier

    phantom, volume, segmentation, table = measured
    nodes = logic.showLandmarks(table, _row(table, "vertebra", "L3"))
    newer = logic.importLabelMap(sitk.ReadImage(str(tmp_path / "labels.nii.gz")), volume)
    assert segmentation in earlier.setAside(newer, volume)
    assert nodes and not any(node.GetDisplayNode().GetVisibility() for node in nodes)


def test_export_writes_where_each_value_was_measured_beside_the_measurements(logic, measured, tmp_path):
    import json

    phantom, volume, segmentation, table = measured
    csv_path, _ = logic.exportMeasurements(table, str(tmp_path / "export"), volume)
    path = str(csv_path)[: -len(".csv")] + "_landmarks.json"
    exported = json.loads(open(path, encoding="utf-8").read())
    assert exported["coordinates"] == "LPS"
    (l3,) = [r for r in exported["records"] if (r["structure"], r["level"]) == ("vertebra", "L3")]
    for corner in ("AS", "PI"):
        a, s = getattr(phantom.bodies[22], corner)
        assert np.linalg.norm(np.asarray(l3["points"][f"L3 {corner}"]) - ph.to_lps(a, s, phantom.x_center)) <= 1.0
    with pytest.raises(FileExistsError):  # never replaced without asking
        logic.exportMeasurements(table, str(tmp_path / "export"), volume)


def test_landmarks_are_projected_onto_the_sagittal_view_only(logic, measured):
    """Each body's corners lie in its own mid-sagittal plane, which the slice a row click centres on may miss by a
    millimetre: unprojected, they would not be drawn there at all. They are projected, and shown in the sagittal slice
    view and 3D only (the coronal Cobb lines in the coronal view), not projected into the axial view."""
    import slicer

    views = {}
    for name in ("Red", "Yellow", "Green"):
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode", f"slice {name}")
        node.SetLayoutName(name)
        views[name] = node.GetID()
    views["3D"] = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLViewNode", "view 3D").GetID()
    phantom, volume, segmentation, table = measured
    nodes = logic.showLandmarks(table, _row(table, "vertebra", "L3"))
    assert nodes
    for node in nodes:
        display = node.GetDisplayNode()
        assert display.GetSliceProjection() and display.GetSliceProjectionOpacity() == 1.0
        shown = {display.GetNthViewNodeID(i) for i in range(display.GetNumberOfViewNodeIDs())}
        assert shown == {views["Yellow"], views["3D"]}, node.GetName()
