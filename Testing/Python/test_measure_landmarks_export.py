"""landmarks.json: where each value was measured, against the analytic phantoms' known corners (patient LPS mm).

The phantom's corners are exact in patient space (phantoms.py); the exported ones must lie within one in-plane voxel
of them on an oblique, anisotropic grid, the endplate lines must run along the true endplates, and every length in
the file must be the value reported in measurements.json. A value that is missing or withheld has no landmarks.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

import phantoms as ph
from SpineAnalysisLib.labels import vertebra_name
from SpineAnalysisLib.measure import landmark_points
from SpineAnalysisLib.measurements import measure_case, measure_case_with_landmarks

#: an oblique, anisotropic grid (as test_measure_geometry's)
SPACING, DIRECTION = (0.9, 1.1, 1.3), ph.rotation((-0.7, 0.2, 0.4), 25.0)
ANGLE_TOL = 2.5
PHANTOM = dict(
    levels=(20, 21, 22, 23, 24, 26),
    heights={"default": 27.0, 21: (22.0, 27.0)},  # L2 wedge
    discs=[(11, 8), (12, 8), (13, 8), (14, 8), (15, 7)],  # lordotic discs
    top_angle=12.0,
    dents={22: 3.0},  # L3 biconcave: middle height 20 mm
    x_center=7.0,  # mid-sagittal planes 7 mm left of the origin (a depth sign error moves them to the right)
)


def in_plane_voxel(spacing, direction) -> float:
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    return max(s * np.sqrt(max(0.0, 1.0 - d[0, i] ** 2)) for i, s in enumerate(spacing))


def truth_lps(body, corner: str, x: float = PHANTOM["x_center"]) -> np.ndarray:
    a, s = getattr(body, corner)
    return ph.to_lps(a, s, x)  # the bodies are centred on x: their mid-sagittal plane


@pytest.fixture(scope="module")
def oblique_case():
    phantom = ph.build_spine(**PHANTOM)
    label_map, image = ph.render_phantom(phantom, SPACING, DIRECTION)
    rows, landmarks = measure_case_with_landmarks(image, label_map)
    return phantom, rows, landmarks


def record(landmarks, structure, level):
    found = landmark_points.records_of(landmarks, structure, level)
    assert len(found) == 1, (structure, level, found)
    return found[0]


def row_value(rows, structure, level, parameter):
    (row,) = [r for r in rows if (r.structure, r.level, r.parameter) == (structure, level, parameter)]
    return row


def test_corners_lie_within_one_voxel_of_the_truth(oblique_case):
    phantom, rows, landmarks = oblique_case
    tol = in_plane_voxel(SPACING, DIRECTION)
    assert landmarks["coordinates"] == "LPS" and landmarks["unit"] == "mm"
    for v in phantom.order:
        level = vertebra_name(v)
        points = record(landmarks, "vertebra", level)["points"]
        assert sorted(points) == sorted(f"{level} {c}" for c in ("AS", "AI", "PS", "PI"))
        for corner in ("AS", "AI", "PS", "PI"):
            error = np.linalg.norm(np.asarray(points[f"{level} {corner}"]) - truth_lps(phantom.bodies[v], corner))
            assert error <= tol, (level, corner, error)


def test_segments_have_the_reported_lengths_and_meet_the_corners(oblique_case):
    phantom, rows, landmarks = oblique_case
    l3 = record(landmarks, "vertebra", "L3")
    chord = l3["segments"]["L3 middle height"]
    reported = row_value(rows, "vertebra", "L3", "height_middle_mm").value
    assert chord["length_mm"] == pytest.approx(reported, abs=1e-3)
    assert np.linalg.norm(np.subtract(chord["to"], chord["from"])) == pytest.approx(reported, abs=1e-3)
    # the chord runs along the body's up axis, through the middle of the body (the dents are central and symmetric)
    body = phantom.bodies[22]
    centre = np.mean([truth_lps(body, c) for c in ("AS", "AI", "PS", "PI")], axis=0)
    middle = (np.asarray(chord["from"]) + np.asarray(chord["to"])) / 2
    assert np.linalg.norm(middle - centre) <= in_plane_voxel(SPACING, DIRECTION)
    assert l3["values"]["height_middle_mm"] == ["L3 middle height"]
    assert l3["values"]["height_anterior_mm"] == ["L3 AS", "L3 AI"]

    disc = record(landmarks, "disc", "L3-L4")
    assert disc["method"] == "corners"
    anterior = disc["segments"]["L3-L4 anterior height"]
    assert anterior["from"] == disc["points"]["L3 AI"] and anterior["to"] == disc["points"]["L4 AS"]
    assert anterior["length_mm"] == pytest.approx(row_value(rows, "disc", "L3-L4", "height_anterior_mm").value, abs=1e-3)
    # the disc's corners are the bodies' own corners (the same endplates)
    assert disc["points"]["L3 AI"] == record(landmarks, "vertebra", "L3")["points"]["L3 AI"]


def _angle_deg(direction_lps) -> float:
    """Angle of an LPS direction in the sagittal (anterior, superior) plane, degrees."""
    return float(np.degrees(np.arctan2(direction_lps[2], -direction_lps[1])))


def test_endplate_lines_run_along_the_true_endplates(oblique_case):
    phantom, rows, landmarks = oblique_case
    tol = in_plane_voxel(SPACING, DIRECTION)
    for upper, lower in phantom.disc_pairs():
        level = f"{vertebra_name(upper)}-{vertebra_name(lower)}"
        disc = record(landmarks, "disc", level)
        names = disc["values"]["segmental_angle_deg"]
        assert names == [f"{vertebra_name(upper)} inferior endplate", f"{vertebra_name(lower)} superior endplate"]
        for name, body, (back, front) in ((names[0], phantom.bodies[upper], ("PI", "AI")), (names[1], phantom.bodies[lower], ("PS", "AS"))):
            line = disc["lines"][name]
            true_back, true_front = truth_lps(body, back), truth_lps(body, front)
            assert np.linalg.norm(line["direction"]) == pytest.approx(1.0, abs=1e-5)
            assert _angle_deg(line["direction"]) == pytest.approx(_angle_deg(true_front - true_back), abs=ANGLE_TOL), name
            assert np.linalg.norm(np.asarray(line["point"]) - (true_back + true_front) / 2) <= tol, name
            assert line["length_mm"] == pytest.approx(np.linalg.norm(true_front - true_back), abs=2 * tol)
        # the angle between the two exported directions is the reported segmental angle
        a, b = (disc["lines"][n]["direction"] for n in names)
        measured = _angle_deg(a) - _angle_deg(b)
        assert measured == pytest.approx(row_value(rows, "disc", level, "segmental_angle_deg").value, abs=1e-3)


def test_lordosis_and_sacral_slope_name_their_endplates(oblique_case):
    phantom, rows, landmarks = oblique_case
    slope_row = row_value(rows, "spine", "S1", "sacral_slope_deg")
    slope = record(landmarks, "spine", "S1")
    assert slope["values"]["sacral_slope_deg"] == ["S1 superior endplate", landmark_points.AP_AXIS]
    s1 = slope["lines"]["S1 superior endplate"]["direction"]
    assert -_angle_deg(s1) == pytest.approx(slope_row.value, abs=1e-3)
    assert _angle_deg(slope["lines"][landmark_points.AP_AXIS]["direction"]) == pytest.approx(0.0, abs=1e-9)
    lordosis = [r for r in landmark_points.records_of(landmarks, "spine", "L1-S1") if "lumbar_lordosis_deg" in r["values"]][0]
    top, bottom = (lordosis["lines"][n]["direction"] for n in lordosis["values"]["lumbar_lordosis_deg"])
    assert _angle_deg(top) - _angle_deg(bottom) == pytest.approx(row_value(rows, "spine", "L1-S1", "lumbar_lordosis_deg").value, abs=1e-3)
    # the Cobb angle of a spine straight in the coronal plane (about 0 degrees) still names the two endplates it took
    cobb = [r for r in landmark_points.records_of(landmarks, "spine", "L1-S1") if "cobb_max_deg" in r["values"]][0]
    assert all(name.endswith(landmark_points.CORONAL) for name in cobb["values"]["cobb_max_deg"])


def _coronal_angle(direction_lps) -> float:
    """Angle of an LPS direction in the coronal (left, superior) plane, degrees."""
    return float(np.degrees(np.arctan2(direction_lps[2], direction_lps[0])))


def test_the_cobb_angle_shows_its_two_endplates_in_their_mid_coronal_planes():
    """L2 tilted 7 degrees, L4 -5 degrees about the AP axis (test_measure_geometry's Cobb phantom): the Cobb angle
    takes an endplate of each; the exported lines run along them, in each body's mid-coronal plane."""
    tilts = {21: 7.0, 22: -2.0, 23: -5.0}
    phantom = ph.build_spine((20, 21, 22, 23), heights=26.0, discs=12.0, coronal_tilts=tilts, disc_labels=False, csf=False)
    spacing, direction = (1.0, 1.0, 1.0), ph.oblique(15.0, axis=(0.1, 0.9, 0.4))
    label_map, _ = ph.render_phantom(phantom, spacing, direction)
    rows, landmarks = measure_case_with_landmarks(None, label_map)
    cobb_row = row_value(rows, "spine", "L1-L4", "cobb_max_deg")
    (record_,) = [r for r in landmark_points.records_of(landmarks, "spine", "L1-L4") if "cobb_max_deg" in r["values"]]
    names = record_["values"]["cobb_max_deg"]
    assert [name.split()[0] for name in names] == ["L2", "L4"] and all(n.endswith(" endplate (coronal)") for n in names)
    angles = [_coronal_angle(record_["lines"][name]["direction"]) for name in names]
    assert abs(angles[0] - angles[1]) == pytest.approx(cobb_row.value, abs=1e-3)
    for name, angle in zip(names, angles):
        vertebra = {"L2": 21, "L4": 23}[name.split()[0]]
        truth = ph.rotation((0, 1, 0), tilts[vertebra]) @ np.array([1.0, 0.0, 0.0])  # the body's left-right axis, tilted
        assert angle == pytest.approx(_coronal_angle(truth), abs=ANGLE_TOL), name
        centroid = phantom.body_prism(vertebra).centroid_lps()  # its mid-coronal plane: the centroid's y
        assert record_["lines"][name]["point"][1] == pytest.approx(centroid[1], abs=in_plane_voxel(spacing, direction))


def test_a_withheld_disc_has_no_landmarks():
    """L2-L3 is 35 mm high: outside the physical range, its heights are withheld by the quality gate; the cut L1 at the
    top of the image gives no corners for its own heights. Neither has landmarks, and both say why."""
    phantom = ph.build_spine((20, 21, 22, 23), discs={"default": 10.0, 21: 35.0}, csf=False)
    label_map, image = ph.render_phantom(phantom, (1.0, 1.0, 1.0), ph.LPS_DIRECTION, margin=6.0)
    label_map = ph.crop(label_map, upper=(0, 0, 12))  # the top 12 mm: L1 cut by the field of view
    rows, landmarks = measure_case_with_landmarks(None, label_map)
    disc = record(landmarks, "disc", "L2-L3")
    for parameter in ("height_anterior_mm", "height_middle_mm", "height_posterior_mm"):
        assert row_value(rows, "disc", "L2-L3", parameter).value is None
        assert disc["withheld"][parameter].startswith("withheld:"), disc["withheld"]
        assert parameter not in disc["values"]
    assert not disc["segments"] and not disc["points"]
    l1 = record(landmarks, "vertebra", "L1")
    assert not l1["points"] and not l1["segments"] and "cut by the field of view" in l1["withheld"]["height_anterior_mm"]
    assert record(landmarks, "disc", "L3-L4")["segments"]  # the measured disc below keeps its landmarks


def test_landmarks_do_not_change_the_measurements(oblique_case):
    phantom, rows, _ = oblique_case
    label_map, image = ph.render_phantom(phantom, SPACING, DIRECTION)
    assert measure_case(image, label_map) == rows


def test_measure_writes_landmarks_json_beside_measurements_json(tmp_path):
    from SpineAnalysisLib.measure_segmentation import measure_files

    phantom = ph.build_spine((22, 23, 24), csf=True)
    label_map, image = ph.render_phantom(phantom, (1.0, 1.0, 2.0), ph.RAS_DIRECTION)
    sitk.WriteImage(image, str(tmp_path / "image.nii.gz"))
    sitk.WriteImage(label_map, str(tmp_path / "labels.nii.gz"))
    result = measure_files(tmp_path / "image.nii.gz", tmp_path / "labels.nii.gz", tmp_path / "out")
    written = json.loads((tmp_path / "out" / landmark_points.FILE_NAME).read_text(encoding="utf-8"))
    assert written["format"] == landmark_points.FORMAT and written == json.loads(json.dumps(result.landmarks))
    points = record(written, "vertebra", "L4")["points"]
    error = np.linalg.norm(np.asarray(points["L4 AS"]) - truth_lps(phantom.bodies[23], "AS", 0.0))
    assert error <= in_plane_voxel((1.0, 1.0, 2.0), ph.RAS_DIRECTION)  # an RAS file: still LPS in the output
