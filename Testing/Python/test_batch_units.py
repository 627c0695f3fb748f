"""Batch building blocks without a cluster: input discovery, state/commit, cohort table, normative comparison, HTML."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import stat
from pathlib import Path

import pytest

from SpineAnalysisLib.batch import cohort, html, normative
from SpineAnalysisLib.batch.discover import Case, discover_cases, read_case_list
from SpineAnalysisLib.batch.runner import Progress
from SpineAnalysisLib.batch.state import DONE, BatchState, commit, one_line, partial_dir
from SpineAnalysisLib.errors import InputError
from SpineAnalysisLib.measure import normative as healthy


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ discovery
def test_folder_discovery_is_recursive_with_stable_ids(tmp_path):
    root = tmp_path / "in"
    _touch(root / "sub-01" / "anat" / "T2w.nii.gz")
    _touch(root / "b.nrrd")
    _touch(root / "a.nii")
    _touch(root / "a.nii.gz")  # same stem: both keep their suffix
    _touch(root / "notes.txt")
    _touch(root / ".hidden" / "x.nii.gz")
    _touch(root / "series1" / "IM0001", b"\0" * 128 + b"DICM" + b"\0" * 16)  # DICOM file without suffix
    _touch(root / "series1" / "IM0002", b"\0" * 128 + b"DICM" + b"\0" * 16)
    _touch(root / "series2" / "1.dcm")
    _touch(root / "out" / "cases" / "z.nii.gz")  # the output folder inside INPUT is skipped
    cases = discover_cases(root, exclude=root / "out")
    ids = [c.case_id for c in cases]
    assert ids == sorted(["sub-01__anat__T2w", "b", "a_nii", "a_nii_gz", "series1", "series2"])
    by_id = {c.case_id: c for c in cases}
    assert by_id["series1"].path == str((root / "series1").resolve())
    assert discover_cases(root, exclude=root / "out") == cases  # stable
    assert [c.case_id for c in discover_cases(root, exclude=root / "out", pattern="*.nrrd")] == ["b"]
    with pytest.raises(InputError, match="no images"):
        discover_cases(tmp_path / "in" / "sub-01", pattern="*.mha")


def test_names_that_differ_only_in_replaced_characters_get_distinct_stable_ids(tmp_path):
    """'Müller scan' and 'Müller_scan' (or 'Müller' and 'Mäller') both became 'M_ller_scan' and the whole batch was
    refused ("case id ... occurs twice"); a read-only input folder cannot even be renamed to fix it."""
    root = tmp_path / "in"
    for name in ("Müller scan.nii.gz", "Müller_scan.nii.gz", "Mäller_scan.nii.gz", "other.nii.gz"):
        _touch(root / name)
    cases = discover_cases(root)
    ids = [c.case_id for c in cases]
    assert len(set(ids)) == 4 and "other" in ids
    clashing = [i for i in ids if i != "other"]
    assert all(i.startswith("M_ller_scan_nii_gz_") and len(i) == len("M_ller_scan_nii_gz_") + 8 for i in clashing)
    assert discover_cases(root) == cases  # stable: the same ids on a rerun


def test_csv_listing_with_age_sex_relative_paths_and_per_row_problems(tmp_path):
    listing = tmp_path / "lists" / "cohort.csv"
    _touch(tmp_path / "img" / "p1.nii.gz")
    listing.parent.mkdir()
    listing.write_text("\ufeffcase_id,path,age,sex,site\nP1,../img/p1.nii.gz,54,female,A\nP 2,/data/p2.nii.gz,,M,B\nP3,x.nii,abc,F,\n\n", encoding="utf-8")
    cases = read_case_list(listing)
    assert [c.case_id for c in cases] == ["P1", "P 2", "P3"]
    assert cases[0].path == str((tmp_path / "img" / "p1.nii.gz").resolve()) and cases[0].age == 54 and cases[0].sex == "F"
    assert cases[1].age is None and cases[1].sex == "M" and not cases[1].problem
    assert "age" in cases[2].problem and "line 4" in cases[2].problem
    assert discover_cases(listing) == cases


@pytest.mark.parametrize("text, message", [
    ("id,file\na,b\n", "case_id and path"),
    ("case_id,path\na,x.nii\na,y.nii\n", "occurs twice"),
    ("case_id,path\na b,x.nii\na_b,y.nii\n", "same output folder"),
])
def test_malformed_listing_is_one_input_error(tmp_path, text, message):
    listing = tmp_path / "c.csv"
    listing.write_text(text)
    with pytest.raises(InputError, match=message):
        read_case_list(listing)


# ------------------------------------------------------------------ state
def test_commit_is_all_or_nothing_and_first_execution_wins(tmp_path):
    case = Case("c1", "/x.nii")
    final = tmp_path / "cases" / "c1"
    first, second = partial_dir(tmp_path, case), partial_dir(tmp_path, case)
    for folder, text in ((first, "first"), (second, "second")):
        _touch(folder / "measurements.csv", text.encode())
        _touch(folder / DONE, b"{}")
    assert commit(first, final) is True
    assert commit(second, final) is False  # a duplicate execution is discarded
    assert (final / "measurements.csv").read_text(encoding="utf-8") == "first" and not second.exists()
    stale = partial_dir(tmp_path, Case("c2", "/y.nii"))
    _touch(stale / "labels.nii.gz")
    state = BatchState(tmp_path)
    assert state.is_done(case) and not state.is_done("c2")
    assert state.clean_partials() == 1 and not stale.exists() and final.exists()


def test_errors_csv_is_rebuilt_from_records_without_duplicates(tmp_path):
    state = BatchState(tmp_path)
    a, b = Case("a", "/a.nii"), Case("b", "/b.nii")
    state.record_error(a, "input", "first\nsecond line")
    state.record_error(a, "input", "again")  # replaces, not appends
    state.record_error(b, "processing", "boom")
    _touch(tmp_path / "cases" / "b" / DONE, b"{}")  # b finished later: not an error any more
    path, count = state.write_errors_csv([a, b])
    rows = list(csv.DictReader(path.open(encoding="utf-8", newline="")))
    assert count == 1 and [r["case_id"] for r in rows] == ["a"] and rows[0]["error"] == "again"
    assert one_line(ValueError("x\ny")) == "ValueError: x" and one_line(InputError("bad\nmore")) == "bad"


def test_only_one_batch_writes_into_a_folder(tmp_path):
    with BatchState(tmp_path).lock():
        with pytest.raises(InputError, match="another batch"):
            with BatchState(tmp_path).lock():
                pass
    with BatchState(tmp_path).lock():  # released
        pass


def test_progress_line_has_rate_and_eta():
    stream = io.StringIO()
    bar = Progress(10, 3, stream, interval=0)
    bar.started -= 20
    bar.update(done=3, failed=1)
    line = stream.getvalue().strip()
    assert "4/10 (40%)" in line and "3 done, 1 failed, 3 finished earlier" in line
    assert "720 cases/h" in line and "ETA 30s" in line


# ------------------------------------------------------------------ cohort table and normative comparison
def _rows(n_per_group: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n_per_group * 2):
        sex = "F" if i % 2 else "M"
        age = 40 + rng.random() * 9.9
        for level in ("L4-L5", "T12-L1"):
            value = rng.gauss(0.37, 0.05)
            rows.append({"case_id": f"c{i:04d}", "age": age, "sex": sex, "structure": "disc", "level": level, "parameter": "dhi",
                         "value": value, "unit": "ratio", "note": "", "label": 123, "model": "m"})
    rows.append({"case_id": "low", "age": 45.0, "sex": "F", "structure": "disc", "level": "L4-L5", "parameter": "dhi", "value": 0.05,
                 "unit": "ratio", "note": "", "label": 123, "model": "m"})
    rows.append({"case_id": "low", "age": 45.0, "sex": "F", "structure": "disc", "level": "L4-L5", "parameter": "hdr", "value": None,
                 "unit": "ratio", "note": "not measurable", "label": 123, "model": "m"})
    return rows


def test_cohort_percentiles_when_the_stratum_is_large_enough():
    comparison = normative.compare(_rows(120), min_n=100)
    low = [r for r in comparison if r["case_id"] == "low"]
    assert len(low) == 1  # missing values are not compared
    low = low[0]
    assert low["reference"] == "cohort" and low["cohort_stratum"] == "L4-L5, female, age 40-50" and low["cohort_n"] == 121
    assert low["percentile"] == pytest.approx(100 * 0.5 / 121) and low["flag"] is True and low["cohort_z"] < -5
    expected_z, _ = healthy.z_score("dhi", "L4-L5", 0.05, "model")  # the healthy columns come from the shared reference
    assert low["healthy_z"] == pytest.approx(expected_z)
    thoracolumbar = [r for r in comparison if r["level"] == "T12-L1"]
    assert all(r["reference"] == "cohort" for r in thoracolumbar)
    flagged = [r for r in comparison if r["flag"]]
    assert 0.01 < len(flagged) / len(comparison) < 0.06  # about 2.5 % of a normal sample (one-sided rule), plus the outlier


def test_small_cohort_falls_back_to_the_healthy_reference_and_reports_missing_reference():
    comparison = normative.compare(_rows(10), min_n=100)
    low = next(r for r in comparison if r["case_id"] == "low")
    mean, sd, _ = healthy.reference("dhi", "L4-L5", "model")
    assert low["reference"] == healthy.reference_name("model") and low["healthy_mean"] == mean
    assert low["percentile"] == pytest.approx(50 * (1 + math.erf((0.05 - mean) / sd / math.sqrt(2)))) and low["flag"] is True
    assert "cohort stratum has 11 values" in low["note"]
    rows = _rows(10)
    for r in rows:
        r["level"] = "C2-C3" if r["level"] == "T12-L1" else r["level"]
    c2 = next(r for r in normative.compare(rows, min_n=100) if r["level"] == "C2-C3")
    assert c2["reference"] == "none" and c2["flag"] is None and "no SpineAnalysis healthy reference" in c2["note"]
    forced = normative.compare(_rows(10), min_n=100, reference="cohort")
    assert all(r["reference"] == "none" for r in forced)
    assert all(r["reference"] in (healthy.reference_name("model"), "none") for r in normative.compare(_rows(120), reference="healthy"))


def test_table_writer_roundtrips_parquet_and_csv_with_missing_values(tmp_path):
    import pyarrow.parquet as pq

    rows = _rows(2)
    parquet, csv_path = cohort.write_table(rows, cohort.TABLE_COLUMNS, cohort.MEASUREMENT_TYPES, tmp_path / "measurements")
    table = pq.read_table(parquet).to_pylist()
    assert len(table) == len(rows) and table[-1]["value"] is None and table[0]["label"] == 123
    read = list(csv.DictReader(csv_path.open(encoding="utf-8", newline="")))
    assert [r["case_id"] for r in read] == [r["case_id"] for r in rows] and read[-1]["value"] == ""
    umask = os.umask(0)
    os.umask(umask)
    for path in (parquet, csv_path):  # like every other output: not mkstemp's private 0600
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_cohort_rebuild_reads_finished_cases_only_and_writes_reports(tmp_path):
    cases = [Case("a", "/a.nii", 35.0, "F"), Case("b", "/b.nii", 62.0, "M"), Case("c", "/c.nii")]
    for case, dhi in ((cases[0], 0.36), (cases[1], 0.12)):
        rows = [{"structure": "disc", "level": "L4-L5", "parameter": "dhi", "value": dhi, "unit": "ratio", "note": "", "label": 123},
                {"structure": "disc", "level": "L4-L5", "parameter": "delta_si", "value": 80.0, "unit": "", "note": "", "label": 123},
                {"structure": "vertebra", "level": "L4", "parameter": "height_anterior_mm", "value": None, "unit": "mm", "note": "cut <b>", "label": 23}]
        folder = tmp_path / "cases" / case.case_id
        _touch(folder / "measurements.json", json.dumps(rows).encode())
        _touch(folder / DONE, json.dumps({"model": "m 1"}).encode())
        _touch(folder / "report.png", b"\x89PNG")
        page = html.write_case_page(folder, case.case_id, case.path, rows, {"model": "m 1", "levels": ["L4", "L4-L5"]}, case.age, case.sex)
        assert "cut &lt;b&gt;" in page.read_text(encoding="utf-8") and 'src="report.png"' in page.read_text(encoding="utf-8")
    BatchState(tmp_path).record_error(cases[2], "input", "broken file")
    cohort.write_case_list(tmp_path, cases)
    outputs = cohort.rebuild_cohort(tmp_path)
    table = list(csv.DictReader(outputs["measurements_csv"].open(encoding="utf-8", newline="")))
    assert {r["case_id"] for r in table} == {"a", "b"} and len(table) == 6
    assert cohort.rebuild_cohort(tmp_path)["measurements_csv"].read_text(encoding="utf-8") == outputs["measurements_csv"].read_text(encoding="utf-8")  # no duplicates
    report = outputs["report"].read_text(encoding="utf-8")
    assert "1</b> stopped with an error" in report and "broken file" in report and 'href="cases/b/case.html"' in report
    for name in ("distributions.png", "dhi_vs_age.png", "delta_si_vs_age.png"):
        assert (tmp_path / "cohort" / name).read_bytes()[:4] == b"\x89PNG"
    flagged = [r for r in csv.DictReader(outputs["normative_csv"].open(encoding="utf-8", newline="")) if r["flag"] == "true"]
    assert [(r["case_id"], r["parameter"]) for r in flagged] == [("b", "dhi")]  # DHI 0.12 at 62: far below healthy


def test_case_page_links_only_the_files_the_case_has(tmp_path):
    """A case measured from a given segmentation (CSV labels column) has no report.png or labels.nii.gz: its page
    showed a broken image and two dead links, and did not link its measure_summary.json."""
    folder = tmp_path / "cases" / "given"
    for name in ("measurements.csv", "measurements.json", "summary.json", "measure_summary.json"):
        _touch(folder / name, b"{}")
    page = html.write_case_page(folder, "given", "/given.nii", [], {"model": "none (segmentation given)"}).read_text(encoding="utf-8")
    assert "report.png" not in page and "labels.nii.gz" not in page
    assert all(f'href="{name}"' in page for name in ("measurements.csv", "measurements.json", "summary.json", "measure_summary.json"))


def test_cohort_report_counts_add_up_with_quality_statuses(tmp_path):
    """The report said "3 finished, 1 failed" and then listed "Failed cases (2)" (one stopped, one finished with quality
    failed): the first line now gives the finished cases' quality statuses too."""
    cases = [Case(name, f"/{name}.nii") for name in ("good", "doubtful", "bad", "broken")]
    for case, status in zip(cases, ("ok", "review", "failed")):
        folder = tmp_path / "cases" / case.case_id
        _touch(folder / "measurements.json", b"[]")
        _touch(folder / "summary.json", json.dumps({"quality": {"status": status, "reasons": [f"{status} reason"]}}).encode())
        _touch(folder / DONE, b"{}")
    BatchState(tmp_path).record_error(cases[3], "input", "broken file")
    cohort.write_case_list(tmp_path, cases)
    report = cohort.rebuild_cohort(tmp_path)["report"].read_text(encoding="utf-8")
    assert "<b>3</b> finished (quality: 1 ok, 1 for review, 1 failed), <b>1</b> stopped with an error, 0 not run yet" in report
    assert "Failed cases (2)" in report and "Cases for review (1)" in report


def test_batch_summary_line_gives_the_quality_of_the_finished_cases(tmp_path, capsys):
    """'3 of 3 cases finished' said nothing of a case whose quality is 'failed' (its values withheld): the line now
    counts the statuses. A rerun of a finished batch starts no cluster, so this needs no Dask workers."""
    from SpineAnalysisLib.cli import main

    data, out = tmp_path / "in", tmp_path / "out"
    for name, status in (("a", "ok"), ("b", "review"), ("c", "failed")):
        _touch(data / f"{name}.nii.gz")
        folder = out / "cases" / name
        _touch(folder / "measurements.json", b"[]")
        _touch(folder / "summary.json", json.dumps({"quality": {"status": status, "reasons": [status]}}).encode())
        _touch(folder / DONE, b"{}")
    _touch(out / "batch.json", b"{}")
    assert main(["batch", str(data), "-o", str(out), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("3 of 3 cases finished (0 in this run, 3 earlier; quality: 1 ok, 1 review, 1 failed); 0 not finished"
                        " - review and failed cases are listed first in report.html")


def test_cohort_flag_column_is_true_false_like_every_case_table(tmp_path):
    """The cohort table wrote Python's "True"/"False" while each case's measurements.csv and normative.csv say
    true/false; a case read from its CSV (no measurements.json) must not turn "false" into a flag either."""
    import pyarrow.parquet as pq

    cases = [Case("json", "/a.nii"), Case("csv", "/b.nii")]
    rows = [{"structure": "disc", "level": "L4-L5", "parameter": "dhi_z", "value": -2.5, "unit": "z", "reference": "r", "flag": True},
            {"structure": "disc", "level": "L3-L4", "parameter": "dhi_z", "value": 0.1, "unit": "z", "reference": "r", "flag": False},
            {"structure": "disc", "level": "L3-L4", "parameter": "dhi", "value": 0.3, "unit": "ratio", "flag": None}]
    _touch(tmp_path / "cases" / "json" / "measurements.json", json.dumps(rows).encode())
    lines = ["structure,level,parameter,value,unit,note,reference,flag,quality"] + [
        f"disc,{r['level']},{r['parameter']},{r['value']},{r['unit']},,{r.get('reference', '')},{'' if r['flag'] is None else str(r['flag']).lower()},ok"
        for r in rows]
    _touch(tmp_path / "cases" / "csv" / "measurements.csv", ("\n".join(lines) + "\n").encode())
    for case in cases:
        _touch(tmp_path / "cases" / case.case_id / DONE, b"{}")
    cohort.write_case_list(tmp_path, cases)
    outputs = cohort.rebuild_cohort(tmp_path, report=False)
    table = list(csv.DictReader(outputs["measurements_csv"].open(encoding="utf-8", newline="")))
    assert [(r["case_id"], r["flag"]) for r in table] == [("csv", "true"), ("csv", "false"), ("csv", ""), ("json", "true"), ("json", "false"), ("json", "")]
    assert [r["flag"] for r in pq.read_table(outputs["measurements_parquet"]).to_pylist()] == [True, False, None] * 2


def test_a_device_this_machine_lacks_is_refused_before_the_local_cluster_starts(tmp_path, capsys):
    """'batch --device cuda' without a GPU started the cluster, wrote OUTDIR, and printed a worker traceback before its error."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    from SpineAnalysisLib.cli import main

    _touch(tmp_path / "in" / "a.nii.gz")
    assert main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--device", "cuda"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "spineanalysis: error: --device cuda was asked for but no CUDA GPU is available (use --device auto or cpu)"
    assert captured.out == "" and not (tmp_path / "out").exists()


def test_setup_errors_stop_the_batch_with_one_line(tmp_path, capsys):
    from SpineAnalysisLib.cli import main

    _touch(tmp_path / "in" / "a.nii.gz")
    assert main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "no-such-model", "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("spineanalysis: error: model 'no-such-model' not found") and "\n" not in error
    assert not (tmp_path / "out").exists()  # refused before OUTDIR (batch.json naming the wrong model) is made
    assert main(["batch", str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) == 2
    assert main(["cohort-report", str(tmp_path / "in")]) == 2
    assert "no cases.csv" in capsys.readouterr().err
    assert main(["cohort-report", str(tmp_path / "typo")]) == 2  # was: "no cases.csv; is this the output folder ...?"
    assert capsys.readouterr().err.strip() == f"spineanalysis: error: {tmp_path / 'typo'}: no such folder"
