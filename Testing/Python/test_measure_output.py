"""The public measurement API: contract parameter names, units, row order, label restriction, CSV/JSON files."""

from __future__ import annotations

import csv
import json
import math

import pytest

import phantoms as ph
from SpineAnalysisLib import labels as scheme
from SpineAnalysisLib.measurements import (
    Measurement,
    measure_case,
    measurements_to_table,
    write_measurements,
)

DISC_PARAMETERS = {
    "height_anterior_mm": "mm",
    "height_middle_mm": "mm",
    "height_posterior_mm": "mm",
    "height_mean_mm": "mm",
    "segmental_angle_deg": "deg",
    "volume_mm3": "mm3",
    "dh_bianque": "mm",
    "dhi": "ratio",
    "hdr": "ratio",
    "delta_si": "",
    "pfirrmann_estimate": "grade",
    "pfirrmann_confidence": "ratio",
    "dhi_z": "z",
    "hdr_z": "z",
    "delta_si_z": "z",
}
VERTEBRA_PARAMETERS = {
    "height_anterior_mm": "mm",
    "height_middle_mm": "mm",
    "height_posterior_mm": "mm",
    "wedge_ratio": "ratio",
    "biconcavity_ratio": "ratio",
    "genant_grade": "grade",
    "ap_depth_mm": "mm",
    "volume_mm3": "mm3",
    "slip_percent": "percent",
    "centroid_r_mm": "mm",
    "centroid_a_mm": "mm",
    "centroid_s_mm": "mm",
}
SPINE_PARAMETERS = {"lumbar_lordosis_deg": "deg", "sacral_slope_deg": "deg", "cobb_max_deg": "deg"}


@pytest.fixture(scope="module")
def case():
    spine = ph.build_spine((21, 22, 23, 24, 26), heights=26.0, discs=(11.0, 8.0), top_angle=8.0)
    label_map, image = ph.render_phantom(spine, (1.0, 1.0, 1.2), ph.oblique(12.0))
    return label_map, image, measure_case(image, label_map, sex="M", age=52)


def test_contract_names_units_and_types(case):
    _, _, rows = case
    assert all(isinstance(r, Measurement) for r in rows)
    by_structure = {}
    for r in rows:
        by_structure.setdefault((r.structure, r.level), []).append(r)
        assert r.value is None or (isinstance(r.value, float) and math.isfinite(r.value))
        if r.value is None:
            assert r.note, f"{r.level} {r.parameter}: missing without a reason"
    expected = {"disc": DISC_PARAMETERS, "vertebra": VERTEBRA_PARAMETERS}
    for (structure, level), group in by_structure.items():
        if structure == "spine":
            continue
        params = [r.parameter for r in group]
        assert params == list(expected[structure]), (structure, level)
        assert all(r.unit == expected[structure][r.parameter] for r in group)
        label = group[0].label
        assert all(r.label == label for r in group)
        assert scheme.structure_name(label) == level
    spine_rows = [r for r in rows if r.structure == "spine"]
    assert {r.parameter: r.unit for r in spine_rows} == SPINE_PARAMETERS
    assert all(r.label is None for r in spine_rows)
    levels = {r.parameter: r.level for r in spine_rows}
    assert levels["sacral_slope_deg"] == "S1"
    assert levels["lumbar_lordosis_deg"] == "L1-S1"  # L1 not labelled: reported missing with the reason
    lordosis = next(r for r in spine_rows if r.parameter == "lumbar_lordosis_deg")
    assert lordosis.value is None and "L1 not labelled" in lordosis.note
    assert levels["cobb_max_deg"] == "L2-S1"


def test_rows_in_anatomical_order(case):
    _, _, rows = case
    structures = []
    for r in rows:
        key = (r.structure, r.level)
        if not structures or structures[-1] != key:
            structures.append(key)
    assert structures == [
        ("vertebra", "L2"),
        ("disc", "L2-L3"),
        ("vertebra", "L3"),
        ("disc", "L3-L4"),
        ("vertebra", "L4"),
        ("disc", "L4-L5"),
        ("vertebra", "L5"),
        ("disc", "L5-S1"),
        ("vertebra", "S1"),
        ("spine", "L1-S1"),
        ("spine", "S1"),
        ("spine", "L2-S1"),
    ]
    assert [r.structure for r in rows][-3:] == ["spine"] * 3


def test_restricting_to_labels_gives_the_same_values(case):
    label_map, image, rows = case
    full = {(r.level, r.parameter): r.value for r in rows}
    only = measure_case(image, label_map, sex="M", age=52, labels=[23, 123])
    assert {(r.structure, r.level) for r in only} == {("vertebra", "L4"), ("disc", "L4-L5")}
    assert not any(r.structure == "spine" for r in only)
    for r in only:
        assert r.value == full[(r.level, r.parameter)], (r.level, r.parameter)
    # slip of L4 needs L5, DHI of L4-L5 needs L4 and L5: still measured
    assert next(r for r in only if r.parameter == "slip_percent").value is not None
    assert next(r for r in only if r.parameter == "dhi").value is not None
    assert measure_case(image, label_map, labels=[]) == []


def test_table_and_files(case, tmp_path):
    _, _, rows = case
    table = measurements_to_table(rows)
    assert len(table) == len(rows)
    assert list(table[0]) == ["structure", "level", "parameter", "value", "unit", "note", "reference", "flag", "label"]
    csv_path, json_path = write_measurements(rows, tmp_path / "out")
    assert csv_path == tmp_path / "out" / "measurements.csv" and json_path.name == "measurements.json"
    with open(csv_path, newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        header = next(reader)
        body = list(reader)
    assert header == ["structure", "level", "parameter", "value", "unit", "note", "reference", "flag", "quality"]
    assert len(body) == len(rows)
    for line, r in zip(body, rows):
        assert line[:3] == [r.structure, r.level, r.parameter]
        if r.value is None:
            assert line[3] == ""
        else:
            assert float(line[3]) == pytest.approx(r.value, abs=1e-6)
        assert line[4:6] == [r.unit, r.note]
        assert line[6:] == [r.reference, "" if r.flag is None else str(r.flag).lower(), "ok"]
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert len(data) == len(rows)
    for item, r in zip(data, rows):
        assert set(item) == {"structure", "level", "parameter", "value", "unit", "note", "reference", "flag", "label", "quality"}
        assert item["quality"] == "ok"
        assert item["label"] == r.label
        assert (item["value"] is None) == (r.value is None)
    # no temporary files left behind, overwriting works
    write_measurements(rows[:3], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["measurements.csv", "measurements.json"]
    assert len(json.loads(json_path.read_text(encoding="utf-8"))) == 3


def test_transitional_l6_names_its_discs():
    spine = ph.build_spine((23, 24, 25, 26), heights=26.0, discs=10.0, csf=False)
    label_map, _ = ph.render_phantom(spine, (1.0, 1.0, 1.0), ph.LPS_DIRECTION)
    rows = measure_case(None, label_map)
    discs = [(r.level, r.label) for r in rows if r.structure == "disc" and r.parameter == "height_middle_mm"]
    assert discs == [("L4-L5", 123), ("L5-L6", 124), ("L6-S1", 125)]
    for r in rows:
        if r.structure == "disc" and r.parameter == "height_middle_mm":
            assert r.value == pytest.approx(10.0, abs=1.0)
    slip = next(r for r in rows if r.level == "L5" and r.parameter == "slip_percent")
    assert "on L6" in slip.note


def test_a_numerical_failure_in_one_structure_does_not_sink_the_case(case, monkeypatch):
    label_map, image, _ = case
    from SpineAnalysisLib.measure import vertebra

    original = vertebra.rows

    def broken(spine, label):
        if label == 22:
            raise ZeroDivisionError("float division by zero")
        return original(spine, label)

    monkeypatch.setattr(vertebra, "rows", broken)
    rows = measure_case(image, label_map)
    l3 = [r for r in rows if r.structure == "vertebra" and r.level == "L3"]
    assert [r.parameter for r in l3] == list(VERTEBRA_PARAMETERS)
    assert all(r.value is None and "ZeroDivisionError" in r.note for r in l3)
    assert any(r.value is not None for r in rows if r.level == "L4")


def test_report_png_labels_the_pfirrmann_grade_an_estimate_and_cuts_no_title_line():
    """report.png printed "Pf 2" with no word that it is an estimate, and its one-line flag legend (and long notes)
    ran past the figure's right edge."""
    from SpineAnalysisLib import report
    from SpineAnalysisLib.measure import flags

    rows = [Measurement("disc", "L3-L4", "dhi", 0.25, "ratio", label=122),
            Measurement("disc", "L3-L4", "pfirrmann_estimate", 3.0, "grade", "Pfirrmann III (estimate)", label=122),
            Measurement("disc", "L3-L4", "dhi_z", -2.05, "z", label=122, reference="healthy v1", flag=True)]
    values, flagged = report._values_by_level(rows), report._flags_by_level(rows)
    assert report.level_text("L3-L4", values, flagged, disc=True) == "L3-L4  DHI 0.25  Pf 3 est.  ▲ outside normal: dhi low, z=-2.0"
    note = "the image is noisy (estimated signal-to-noise ratio 1.9 < 8): body and disc outlines may be too small and levels less certain"
    lines = report.title_lines("case.nii.gz", rows, [note])
    assert max(len(line) for line in lines) <= report.TITLE_WIDTH
    text = " ".join(lines)
    assert note in text and report.ESTIMATE_TEXT in text and flags.RULE_TEXT in text
    assert report.ESTIMATE_TEXT not in " ".join(report.title_lines("case.nii.gz", rows[:1]))  # only when a grade is shown


def _wcag_contrast(first, second) -> float:
    """WCAG 2.x contrast ratio of two sRGB colours (components 0-1)."""

    def luminance(colour):
        c = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in colour[:3]]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_report_level_texts_are_readable_over_bright_tissue():
    """The bundled sample's report showed L1 (dark blue), L2 and L4 in their structure colours on a 55 % black box over
    bright CSF: contrast 1.1-2.0, unreadable. Every level's drawn text must keep WCAG AA contrast (4.5) against its
    box where the box lies over white."""
    from matplotlib import colors

    from SpineAnalysisLib import report

    phantom = ph.build_spine(levels=(19, 20, 21, 22, 23, 24, 26), heights=24.0, csf=True)
    label_map, image = ph.render_phantom(phantom, (1.0, 1.0, 1.0), ph.SAGITTAL_STACK)
    figure, axis = report.draw_report(image, label_map, measure_case(image, label_map), title="phantom")
    texts = [t for t in axis.texts if t.get_bbox_patch() is not None]
    assert len(texts) == 7 + 6, [t.get_text() for t in axis.texts]  # 7 bodies, 6 discs
    for text in texts:
        box = text.get_bbox_patch()
        alpha = box.get_alpha() if box.get_alpha() is not None else colors.to_rgba(box.get_facecolor())[3]
        box_over_white = [c * alpha + (1 - alpha) for c in colors.to_rgb(box.get_facecolor())]
        assert _wcag_contrast(colors.to_rgb(text.get_color()), box_over_white) >= 4.5, text.get_text()
    for label in scheme.all_labels():  # every structure, also those the phantom does not hold
        colour = report.level_text_colour(label)
        assert _wcag_contrast(colour, [1 - report.LEVEL_BOX_ALPHA] * 3) >= 4.5, scheme.structure_name(label)


def test_report_level_texts_sit_at_the_mean_row_and_right_of_the_last_column_of_their_structure():
    """Each level's text is at its structure's mean row and 8 mm right of its last column, over the whole volume. The
    report finds the labelled voxels once (a mask of the whole volume per level took half its time); here each level's
    own mask gives the expected positions, on a grid stored in another axis order than the canonical frame, with
    unequal spacings."""
    import numpy as np
    import SimpleITK as sitk

    from SpineAnalysisLib import report
    from SpineAnalysisLib.model.preprocessing import sagittal_frame

    spine = ph.build_spine((21, 22, 23, 24, 26), heights=26.0, discs=10.0)
    label_map, image = ph.render_phantom(spine, (0.9, 1.0, 1.2), ph.SAGITTAL_STACK)
    frame = sagittal_frame(image)
    labels = frame.to_canonical(sitk.GetArrayFromImage(label_map))
    expected = {}
    for label in (int(v) for v in np.unique(labels) if v):
        rows, cols = np.nonzero(labels == label)[1:]
        expected[scheme.structure_name(label)] = (cols.max() * frame.spacing[2] + 8, rows.mean() * frame.spacing[1])
    _, axis = report.draw_report(image, label_map, measure_case(image, label_map))
    drawn = {t.get_text().split()[0]: t.get_position() for t in axis.texts if t.get_bbox_patch() is not None}
    assert drawn == expected


def test_structured_export_carries_the_same_flags_and_the_quality_status(tmp_path):
    """export-measurements (the registry CSV with DICOM identifiers) had no reference, flag or quality column: a
    flagged disc or a failed case read like any other there."""
    from bad_files import SAMPLE
    from SpineAnalysisLib.cli import main
    from SpineAnalysisLib.measure import flags
    from SpineAnalysisLib.measurements_export import write_structured_csv

    spine = ph.build_spine((20, 21, 22, 23, 24, 26), heights=26.0, discs={"default": 10.0, 22: 3.0})
    label_map, image = ph.render_phantom(spine, (1.0, 1.0, 1.0), ph.LPS_DIRECTION)
    rows = measure_case(image, label_map, sex="F", age=45.0)
    table = list(csv.DictReader(write_structured_csv(rows, tmp_path / "registry.csv").open(encoding="utf-8")))
    assert [(r["level"], r["parameter"], r["reference"], r["flag"]) for r in table] == [
        (m.level, m.parameter, m.reference, "" if m.flag is None else str(m.flag).lower()) for m in rows]
    assert ("L3-L4", "dhi_z", "true") in {(r["level"], r["parameter"], r["flag"]) for r in table}  # the collapsed disc
    assert {r["quality"] for r in table} == {"ok"}
    assert flags.outside_normal(next(m.value for m in rows if (m.level, m.parameter) == ("L3-L4", "dhi_z")), "dhi_z")
    # the command passes the case's own status: a label map with L2/L4 swapped is 'failed'
    labels = tmp_path / "swapped.nii.gz"
    import SimpleITK as sitk

    expert = sitk.ReadImage(str(SAMPLE).replace("_image", "_labels"))
    array = sitk.GetArrayFromImage(expert)
    swapped = array.copy()
    swapped[array == 21], swapped[array == 23] = 23, 21
    written = sitk.GetImageFromArray(swapped)
    written.CopyInformation(expert)
    sitk.WriteImage(written, str(labels))
    assert main(["export-measurements", str(SAMPLE), str(labels), "-o", str(tmp_path / "cli.csv")]) == 0
    assert {r["quality"] for r in csv.DictReader((tmp_path / "cli.csv").open(encoding="utf-8"))} == {"failed"}


def test_report_png_of_a_map_with_a_spinal_canal_draws_it_without_a_level(tmp_path):
    """A given segmentation (TPTBox/SPINEPS, a corrected map) may hold the spinal canal (61): report.png, now written
    by measure too, sorted every label by level and stopped with 'label 61 has no cranio-caudal rank'."""
    import SimpleITK as sitk

    from SpineAnalysisLib.report import write_report

    spine = ph.build_spine((22, 23, 24), heights=26.0, discs=10.0, canal_label=True)
    label_map, image = ph.render_phantom(spine, (1.0, 1.0, 1.0), ph.LPS_DIRECTION)
    assert 61 in set(sitk.GetArrayFromImage(label_map).ravel().tolist())
    path = write_report(image, label_map, measure_case(image, label_map), tmp_path / "report.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
