"""Quality status and plausibility gates (SpineAnalysisLib.quality) on rendered phantoms with impossible anatomy."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest

import phantoms as ph
from SpineAnalysisLib import quality
from SpineAnalysisLib.measurements import measure_case, write_measurements


def rows_by(rows):
    return {(r.level, r.parameter): r for r in rows}


def _measure(**spine):
    label_map, _ = ph.render_phantom(ph.build_spine(**spine), (1.0, 1.0, 1.0), ph.LPS_DIRECTION)
    return measure_case(None, label_map)


def test_a_normal_phantom_is_ok():
    rows = _measure(levels=(20, 21, 22, 23, 24, 26), heights=26.0, discs=(12.0, 7.0), top_angle=-20.0)
    table = rows_by(rows)
    assert table[("L1-S1", "lumbar_lordosis_deg")].value > 0
    result = quality.assess(rows, {"levels": ["L1"], "confidence": 1.0, "flags": [], "warnings": []})
    assert result.status == "ok" and result.reasons == []
    assert not any(r.note.startswith(quality.WITHHELD) for r in rows)


def test_impossible_slip_is_withheld_and_the_case_failed(tmp_path):
    # the clinical batch's "L2 slip 536 %, Meyerding V": a phantom's rows with that slip, gated as measure_case gates
    rows = _measure(levels=(21, 22, 23, 24), heights=26.0, discs=10.0, slips={23: 8.0}, csf=False)
    assert rows_by(rows)[("L4", "slip_percent")].value == pytest.approx(100 * 8 / 36, abs=3)
    rows = quality.withhold_implausible([dataclasses.replace(r, value=536.0, note="on L5; Meyerding grade V")
                                         if (r.level, r.parameter) == ("L4", "slip_percent") else r for r in rows])
    slip = rows_by(rows)[("L4", "slip_percent")]
    assert slip.value is None and slip.note.startswith(quality.WITHHELD)
    assert "outside the physical range" in slip.note and "Meyerding grade" not in slip.note
    result = quality.assess(rows)
    assert result.status == "failed" and any("L4 slip_percent" in r for r in result.reasons)
    csv_path, json_path = write_measurements(rows, tmp_path)
    line = next(r for r in csv.DictReader(csv_path.open(encoding="utf-8")) if r["level"] == "L4" and r["parameter"] == "slip_percent")
    assert line["value"] == "" and line["quality"] == "failed" and line["note"].startswith(quality.WITHHELD)
    assert {row["quality"] for row in json.loads(json_path.read_text(encoding="utf-8"))} == {"failed"}


def test_negative_lordosis_is_withheld_and_the_case_failed():
    # kyphotic discs (taller behind than in front) give a negative L1-S1 angle
    rows = _measure(levels=(20, 21, 22, 23, 24, 26), heights=26.0, discs=(6.0, 13.0), csf=False)
    lordosis = rows_by(rows)[("L1-S1", "lumbar_lordosis_deg")]
    assert lordosis.value is None and "outside the physical range 0 to 90" in lordosis.note
    result = quality.assess(rows)
    assert result.status == "failed" and any("lumbar_lordosis_deg" in r for r in result.reasons)


def test_dependent_values_are_withheld_with_the_value_they_derive_from():
    rows = [quality_row("disc", "L4-L5", "dhi", 0.0, "ratio"), quality_row("disc", "L4-L5", "dhi_z", -7.0, "z"),
            quality_row("disc", "L4-L5", "hdr", 0.25, "ratio")]
    gated = rows_by(quality.withhold_implausible(rows))
    assert gated[("L4-L5", "dhi")].value is None and gated[("L4-L5", "dhi_z")].value is None
    assert "derived from dhi" in gated[("L4-L5", "dhi_z")].note
    assert gated[("L4-L5", "hdr")].value == 0.25


def quality_row(structure, level, parameter, value, unit):
    from SpineAnalysisLib.measurements import Measurement

    return Measurement(structure, level, parameter, value, unit, "", None)


def test_a_vertebra_far_below_its_neighbour_fails_the_spacing_check():
    # "an S1 in the pelvis": 70 mm of gap between L5 and S1
    rows = _measure(levels=(22, 23, 24, 26), heights=26.0, discs={"default": 10.0, 24: 70.0}, csf=False)
    result = quality.assess(rows)
    assert result.status == "failed"
    assert any(r.startswith("L5-S1 centroids") and "misplaced" in r for r in result.reasons)


def test_a_given_label_map_with_a_body_missing_inside_the_chain_goes_to_review():
    # a label map given to `measure` (no labelling report): L1-L5 with L3 erased, L2 and L4 left
    spine = ph.build_spine(levels=(20, 21, 22, 23, 24), heights=26.0, discs=10.0, csf=False)
    label_map, _ = ph.render_phantom(spine, (1.0, 1.0, 1.0), ph.LPS_DIRECTION)
    result = quality.assess(measure_case(None, ph.keep_labels(label_map, [20, 21, 23, 24, 120, 123])))
    assert result.status == "review"
    assert any(r.startswith("L3 not labelled between L2 and L4") for r in result.reasons), result.reasons
    whole = quality.assess(measure_case(None, label_map))
    assert whole.status == "ok", whole.reasons


@pytest.mark.parametrize(
    "summary, reason",
    [
        ({"levels": ["L1"], "confidence": 0.9, "levels_uncertain": True}, "levels uncertain"),
        ({"levels": ["L1"], "confidence": 0.45}, "confidence 0.45"),
        ({"levels": ["L1"], "confidence": 1.0, "warnings": ["the slices are 30 degrees oblique"]}, "30 degrees oblique"),
    ],
)
def test_labelling_doubts_ask_for_review(summary, reason):
    rows = _measure(levels=(22, 23, 24), heights=26.0, discs=10.0, csf=False)
    result = quality.assess(rows, summary)
    assert result.status == "review" and any(reason in r for r in result.reasons)


def test_a_readers_review_of_the_levels_answers_the_labelling_doubts_only():
    """Reviewed levels: "levels uncertain" and the low confidence are kept as what the model said, no longer as
    reasons; an image warning, a high-grade slip and a value outside its physical range still count."""
    rows = _measure(levels=(22, 23, 24), heights=26.0, discs=10.0, csf=False)
    summary = {"levels": ["L3"], "confidence": 0.45, "levels_uncertain": True, "flags": ["levels uncertain: S1?"],
               "warnings": ["the slices are 30 degrees oblique"]}
    unsure = quality.assess(rows, summary)
    said = ["levels uncertain (labelling chain checks)", "level count uncertain (confidence 0.45 < 0.6)"]
    assert unsure.reasons == said + ["the slices are 30 degrees oblique"] and unsure.levels_review is None
    reviewed = quality.assess(rows, summary, levels_reviewed="2026-12-07T05:30:00+00:00")
    assert reviewed.to_dict() == {"status": "review", "reasons": ["the slices are 30 degrees oblique"], "notes": ["levels uncertain: S1?"],
                                  "levels_review": {"reviewed_at": "2026-12-07T05:30:00+00:00", "model_said": said}}  # fmt: skip
    assert reviewed.banner() == ("quality: review — the slices are 30 degrees oblique; levels reviewed by the reader "
                                 "(model said: levels uncertain (labelling chain checks); level count uncertain (confidence 0.45 < 0.6))")
    assert quality.assess(rows, dict(summary, warnings=[]), levels_reviewed="x").status == "ok"
    slipped = [dataclasses.replace(r, value=60.0) if (r.level, r.parameter) == ("L4", "slip_percent") else r for r in rows]
    assert quality.assess(slipped, dict(summary, warnings=[]), levels_reviewed="x").status == "review"
    impossible = quality.withhold_implausible([dataclasses.replace(r, value=0.4) if (r.level, r.parameter) == ("L3-L4", "height_mean_mm") else r
                                               for r in rows])  # fmt: skip
    assert quality.assess(impossible, summary, levels_reviewed="x").status == "failed"


def test_missing_levels_uncertain_counts_as_false_and_flags_are_notes():
    rows = _measure(levels=(22, 23, 24), heights=26.0, discs=10.0, csf=False)
    result = quality.assess(rows, {"levels": ["L3"], "confidence": 0.95, "flags": ["S1 not in view or not recognised"]})
    assert result.to_dict() == {"status": "ok", "reasons": [], "notes": ["S1 not in view or not recognised"]}
    assert quality.assess(rows, {"levels": [], "confidence": 0.0}).status == "failed"


def test_cohort_report_lists_failed_and_review_cases_first_and_leaves_them_out_of_the_statistics(tmp_path):
    pytest.importorskip("pyarrow")
    from SpineAnalysisLib.batch import cohort
    from SpineAnalysisLib.batch.discover import Case
    from SpineAnalysisLib.batch.state import DONE, BatchState

    cases = [Case(name, f"/{name}.nii", 40.0, "F") for name in ("good", "bad", "doubtful", "crashed")]
    statuses = {"good": ("ok", []), "bad": ("failed", ["L2 slip_percent 536 percent is outside its physical range (withheld)"]),
                "doubtful": ("review", ["level count uncertain (confidence 0.45 < 0.6)"])}
    for case in cases[:3]:
        status, reasons = statuses[case.case_id]
        folder = tmp_path / "cases" / case.case_id
        folder.mkdir(parents=True)
        dhi = {"good": 0.37, "bad": 0.06, "doubtful": 0.08}[case.case_id]
        rows = [{"structure": "disc", "level": "L4-L5", "parameter": "dhi", "value": dhi, "unit": "ratio", "note": "", "label": 123, "quality": status}]
        (folder / "measurements.json").write_text(json.dumps(rows), encoding="utf-8")
        (folder / "summary.json").write_text(json.dumps({"levels": ["L4"], "quality": {"status": status, "reasons": reasons}}), encoding="utf-8")
        (folder / DONE).write_text(json.dumps({"model": "m"}), encoding="utf-8")
    BatchState(tmp_path).record_error(cases[3], "input", "broken file")
    cohort.write_case_list(tmp_path, cases)
    outputs = cohort.rebuild_cohort(tmp_path)
    report = outputs["report"].read_text(encoding="utf-8")
    assert "Failed cases (2)" in report and "Cases for review (1)" in report
    assert report.index("Failed cases") < report.index("Per-level summary") and "536 percent" in report
    table = list(csv.DictReader(outputs["measurements_csv"].open(encoding="utf-8", newline="")))
    assert {(r["case_id"], r["quality"]) for r in table} == {("good", "ok"), ("bad", "failed"), ("doubtful", "review")}
    normative_rows = list(csv.DictReader(outputs["normative_csv"].open(encoding="utf-8", newline="")))
    assert {r["case_id"] for r in normative_rows} == {"good"}  # the failed and review cases are not in the statistics
    from SpineAnalysisLib.cli import main

    assert main(["cohort-report", str(tmp_path), "--include-flagged-cases"]) == 0
    assert {r["case_id"] for r in csv.DictReader(outputs["normative_csv"].open(encoding="utf-8", newline=""))} == {"good", "bad", "doubtful"}
    assert "Failed cases (2)" in outputs["report"].read_text(encoding="utf-8")  # still listed first


def test_the_same_value_gets_the_same_flag_in_table_rows_report_csv_and_html(tmp_path):
    """One flag rule (measure/flags.py) everywhere: a phantom with one collapsed disc (3 mm, DHI about 0.1)."""
    from SpineAnalysisLib import report
    from SpineAnalysisLib.batch import html
    from SpineAnalysisLib.measure import flags
    from SpineAnalysisLib.measurements import measurements_to_table

    spine = ph.build_spine((20, 21, 22, 23, 24, 26), heights=26.0, discs={"default": 10.0, 22: 3.0})
    label_map, image = ph.render_phantom(spine, (1.0, 1.0, 1.0), ph.LPS_DIRECTION)
    rows = measure_case(image, label_map, sex="F", age=45.0)
    in_rows = {(r.level, r.parameter) for r in rows if r.flag}
    assert ("L3-L4", "dhi_z") in in_rows  # the collapsed disc is flagged ...
    assert not any(level == "L2-L3" for level, _ in in_rows)  # ... its healthy neighbour is not
    table = measurements_to_table(rows)
    assert {(r["level"], r["parameter"]) for r in table if r["flag"]} == in_rows
    csv_path, _ = write_measurements(rows, tmp_path)
    assert {(r["level"], r["parameter"]) for r in csv.DictReader(csv_path.open(encoding="utf-8")) if r["flag"] == "true"} == in_rows
    in_report = report._flags_by_level(rows)  # what report.png prints next to each level
    assert {(level, text) for level, texts in in_report.items() for text in texts} == {
        (level, flags.flag_text(parameter, next(r.value for r in rows if (r.level, r.parameter) == (level, parameter))))
        for level, parameter in in_rows}
    page = html.measurement_table(table)
    shown = {(r["level"], r["parameter"]) for r in table if f"<td class=\"flag\">{flags.flag_text(r['parameter'], r['value'])}</td>" in page and r["flag"]}
    assert shown == in_rows and page.count("<td class=\"flag\"></td>") == len(table) - len(in_rows)


def test_bodies_around_an_impossible_disc_get_no_genant_grade():
    # VB3_41's model mask: L5's inferior endplate drawn into the L5-S1 disc (0.6 mm) made L5 read "wedge 48 %, grade 3"
    rows = _measure(levels=(20, 21, 22, 23, 24), heights=26.0, discs={"default": 10.0, 22: 0.6}, csf=False)
    table = rows_by(rows)
    assert table[("L3-L4", "height_anterior_mm")].value is None
    for level in ("L3", "L4"):
        row = table[(level, "genant_grade")]
        assert row.value is None and row.note.startswith(quality.WITHHELD) and "L3-L4 disc" in row.note
        assert table[(level, "height_posterior_mm")].value is not None  # heights stay: only the grade is withheld
    assert table[("L2", "genant_grade")].value == 0
    assert quality.assess(rows).status == "failed"


@pytest.mark.parametrize("labelled_in_part", [True, False])
def test_a_body_labelled_in_part_is_not_judged_by_its_spacing(labelled_in_part):
    """A partly drawn S1 (its volume left empty with that reason) has a displaced centroid: 12 mm from L5's is not
    "levels misplaced"; the same centroid on a body measured whole is."""
    rows = _measure(levels=(22, 23, 24, 26), heights=26.0, discs=10.0, csf=False)
    table = rows_by(rows)
    l5_s = table[("L5", "centroid_s_mm")].value
    changed = []
    for r in rows:
        if r.level == "S1" and r.parameter == "centroid_s_mm":
            r = dataclasses.replace(r, value=l5_s - 12.0)
        if r.level == "S1" and r.parameter == "volume_mm3" and labelled_in_part:
            r = dataclasses.replace(r, value=None, note="labelled in part: its superior endplate is 55 % as long as L5's facing one")
        changed.append(r)
    result = quality.assess(changed)
    misplaced = [reason for reason in result.reasons if reason.startswith("L5-S1 centroids")]
    assert (misplaced == []) == labelled_in_part, result.reasons


@pytest.mark.parametrize("slope, withheld", [(-0.05, False), (0.0, False), (-1.0, True), (75.05, False), (76.0, True)])
def test_a_value_on_a_bound_is_not_a_failed_measurement(slope, withheld):
    """Noise on a bound (a level phantom's 0 degree sacral slope reads a few thousandths below 0) is kept; a value
    clearly outside the range is withheld."""
    from SpineAnalysisLib.measurements import Measurement

    row = Measurement("spine", "S1", "sacral_slope_deg", slope, "deg", "S1 superior endplate vs patient AP axis", None)
    out = quality.withhold_implausible([row])
    assert (out[0].value is None) == withheld
