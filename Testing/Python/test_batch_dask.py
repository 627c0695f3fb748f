"""Batches on a real local Dask cluster (127.0.0.1, worker processes, the real model; no mocks).

Inputs are small crops (14 central sagittal slices) of the bundled real sample, a DICOM series made from one, and
a corrupt, a truncated and a header-bigger-than-data file. About a minute in all on 2 CPU cores.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import SimpleITK as sitk

pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_image.nii.gz"

from bad_files import header_bigger_than_data, truncated_gz  # noqa: E402 - after the importorskips


def _crop(path: Path, first: int, slices: int = 14) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.ReadImage(str(SAMPLE))[:, :, first:first + slices], str(path))
    return path


def _dicom_series(folder: Path, first: int, slices: int = 14) -> Path:
    """Write a crop as a real single-series DICOM folder (one file per sagittal slice)."""
    image = sitk.Cast(sitk.ReadImage(str(SAMPLE))[:, :, first:first + slices], sitk.sitkInt16)
    folder.mkdir(parents=True)
    d = image.GetDirection()
    common = {"0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.2.1125.1.1", "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2",
              "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])), "0018|0050": str(image.GetSpacing()[2]),
              "0010|0020": "TEST"}
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        for key, value in common.items():
            plane.SetMetaData(key, value)
        plane.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        plane.SetMetaData("0020|0013", str(k + 1))
        plane.SetMetaData("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.3.{k + 1}")
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(plane)
    return folder


def _children():
    import psutil

    return [p for p in psutil.Process().children(recursive=True) if "resource_tracker" not in " ".join(p.cmdline())]


def _table(outdir: Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows = pq.read_table(outdir / "measurements.parquet").to_pylist()
    assert len(rows) == sum(1 for _ in csv.DictReader((outdir / "measurements.csv").open(encoding="utf-8", newline="")))
    return rows


def _assert_no_duplicates(rows: list[dict]) -> None:
    keys = Counter((r["case_id"], r["structure"], r["level"], r["parameter"]) for r in rows)
    assert max(keys.values()) == 1


def test_batch_on_a_running_cluster_finishes_good_cases_and_records_the_corrupt_one(tmp_path):
    from SpineAnalysisLib.batch import run_batch

    data = tmp_path / "data"
    _crop(data / "p1.nii.gz", 24)
    _crop(data / "p2.nrrd", 28)
    _dicom_series(data / "p3_dicom", 26)
    (data / "p4.nii.gz").write_bytes(b"\x1f\x8b this is not a NIfTI file")
    truncated_gz(data / "p6.nii.gz")  # ITK alone reads both as whole, zero-filled volumes
    header_bigger_than_data(data / "p7.nii.gz")
    listing = tmp_path / "cohort.csv"
    listing.write_text("case_id,path,age,sex\nP1,data/p1.nii.gz,34,F\nP2,data/p2.nrrd,67,M\nP3,data/p3_dicom,51,F\nP4,data/p4.nii.gz,45,M\n"
                       "P5,data/p1.nii.gz,old,F\nP6,data/p6.nii.gz,50,F\nP7,data/p7.nii.gz,50,M\n")
    outdir = tmp_path / "out"
    stream = io.StringIO()
    # an "existing" cluster, reached by its address as with --scheduler (on a real cluster the workers have the package installed)
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                           env={"PYTHONPATH": str(ROOT)}, silence_logs=40)
    try:
        result = run_batch(listing, outdir, scheduler=cluster.scheduler_address, device="cpu", progress=stream, progress_interval=0)
        assert len(cluster.scheduler_info["workers"]) == 2  # the batch used the cluster and left it running
    finally:
        cluster.close()
        leftovers = _children()
    assert not leftovers, f"Dask processes left behind: {leftovers}"
    assert (result.cases, result.finished, result.succeeded, result.failed, result.workers) == (7, 3, 3, 4, 2)
    assert result.exit_code == 1
    log = stream.getvalue()
    assert f"to run on {cluster.scheduler_address}" in log and "ETA" in log and "3 done, 3 failed" in log

    errors = {r["case_id"]: r for r in csv.DictReader((outdir / "errors.csv").open(encoding="utf-8", newline=""))}
    assert set(errors) == {"P4", "P5", "P6", "P7"}
    for case_id in ("P4", "P6", "P7"):
        assert errors[case_id]["stage"] == "input" and "not a readable image" in errors[case_id]["error"] and "\n" not in errors[case_id]["error"]
        assert not (outdir / "cases" / case_id / "done.json").exists()
    assert "compressed data ends early" in errors["P6"]["error"] and "the header describes" in errors["P7"]["error"]
    assert "age" in errors["P5"]["error"]

    for case_id in ("P1", "P2", "P3"):
        folder = outdir / "cases" / case_id
        assert {"labels.nii.gz", "measurements.csv", "report.png", "summary.json", "case.html", "done.json"} <= {p.name for p in folder.iterdir()}
        done = json.loads((folder / "done.json").read_text(encoding="utf-8"))
        assert done["model_loads_in_worker"] == 1  # each worker process loaded the model once, at start
    from SpineAnalysisLib.imageio import read_image, same_grid

    labels = sitk.ReadImage(str(outdir / "cases" / "P3" / "labels.nii.gz"))  # the DICOM series case, on its own grid
    assert same_grid(labels, read_image(data / "p3_dicom")) and labels.GetSize()[2] == 14

    rows = _table(outdir)
    _assert_no_duplicates(rows)
    assert {r["case_id"] for r in rows} == {"P1", "P2", "P3"}
    assert {(r["case_id"], r["age"], r["sex"]) for r in rows} == {("P1", 34.0, "F"), ("P2", 67.0, "M"), ("P3", 51.0, "F")}
    per_case = Counter(r["case_id"] for r in rows)
    for case_id, count in per_case.items():
        with open(outdir / "cases" / case_id / "measurements.csv", encoding="utf-8", newline="") as stream:
            assert count == sum(1 for _ in csv.DictReader(stream))
    normative_rows = list(csv.DictReader((outdir / "normative.csv").open(encoding="utf-8", newline="")))
    assert normative_rows and all(r["reference"].startswith("SpineAnalysis healthy reference") or r["reference"] == "none" for r in normative_rows)  # 3 cases: no cohort percentiles
    report = (outdir / "report.html").read_text(encoding="utf-8")
    assert "<b>3</b> finished" in report and "not a readable image" in report
    assert (outdir / "cohort" / "distributions.png").is_file()

    # a rerun that does not retry failures starts no cluster and changes nothing
    again = run_batch(listing, outdir, retry_failed=False, progress=None)
    assert (again.skipped, again.succeeded, again.workers) == (3, 0, 0)
    assert _table(outdir) == rows


def test_local_cluster_takes_a_free_port_and_warns_about_none():
    """A second batch on the same machine (port 8787 taken) printed distributed's 4-line "Port 8787 is already in
    use" warning: the scheduler's HTTP routes bound 8787 although the dashboard is off."""
    import socket
    import warnings

    from SpineAnalysisLib.batch.runner import dask_client

    held = socket.socket()
    try:
        held.bind(("127.0.0.1", 8787))
        held.listen()
    except OSError:
        pass  # taken already: the situation this test is about
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with dask_client(None, 1, 1) as client:
                port = client.scheduler_info()["services"]["dashboard"]
    finally:
        held.close()
    assert port != 8787
    assert not [w for w in caught if "already in use" in str(w.message)]


def test_a_case_that_kills_its_worker_is_recorded_in_plain_words(tmp_path):
    """A worker process killed while it analyses a case (here SIGKILL, as the kernel's OOM killer or a segfault would)
    ended in errors.csv as Dask's 400-character KilledWorker text; the other case still finishes."""
    import threading

    import dask
    from distributed import Client, LocalCluster

    from SpineAnalysisLib.batch import run_batch

    data = tmp_path / "data"
    _crop(data / "a.nii.gz", 24)
    _crop(data / "b.nii.gz", 28)
    outdir = tmp_path / "out"
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):  # one death is enough
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                               env={"PYTHONPATH": str(ROOT)}, silence_logs=50)
    try:
        outcome = {}
        runner = threading.Thread(target=lambda: outcome.update(result=run_batch(data, outdir, scheduler=cluster.scheduler_address,
                                                                                  device="cpu", progress=None)))
        runner.start()
        with Client(cluster.scheduler_address) as client:
            deadline = time.time() + 120
            while True:  # the worker that runs case a (case b runs on the other one)
                running_a = [w for w, keys in client.processing().items() if any(str(k).startswith("spineanalysis-a-") for k in keys)]
                if running_a:
                    break
                assert time.time() < deadline and runner.is_alive()
                time.sleep(0.02)
            for pid in client.run(os.getpid, workers=running_a).values():
                os.kill(pid, signal.SIGKILL)
        runner.join(180)
        assert not runner.is_alive()
    finally:
        cluster.close()
    assert (outcome["result"].finished, outcome["result"].failed) == (1, 1)
    errors = {r["case_id"]: r for r in csv.DictReader((outdir / "errors.csv").open(encoding="utf-8", newline=""))}
    assert errors["a"]["stage"] == "worker"
    assert errors["a"]["error"] == ("the worker process died while analysing this case, once (a crash or too little memory); "
                                    "run 'spineanalysis analyze' on this image alone to see the error")


def test_a_local_batch_whose_workers_are_gone_stops_instead_of_waiting_for_ever(tmp_path, monkeypatch):
    """Seen once on a loaded machine: the only worker died and was not restarted, and the batch waited silently for
    more than 14 minutes. Here the local cluster's nannies (in this process) are closed, which leaves no worker."""
    import threading

    from distributed.nanny import Nanny

    from SpineAnalysisLib.batch import run_batch, runner

    monkeypatch.setattr(runner, "NO_WORKER_LIMIT_S", 3.0)
    monkeypatch.setattr(runner, "POLL_S", 0.5)
    _crop(tmp_path / "data" / "a.nii.gz", 24)
    outcome = {}

    def batch():
        try:
            outcome["result"] = run_batch(tmp_path / "data", tmp_path / "out", workers=1, device="cpu", progress=None)
        except Exception as error:  # the SetupError this test expects, or anything else to show
            outcome["error"] = error

    before = set(Nanny._instances)
    runner_thread = threading.Thread(target=batch, daemon=True)  # daemon: without the guard it never returns
    runner_thread.start()
    deadline = time.time() + 120
    while not [n for n in Nanny._instances if n not in before and n.worker_address]:
        assert time.time() < deadline and runner_thread.is_alive(), outcome
        time.sleep(0.05)
    for nanny in [n for n in Nanny._instances if n not in before]:
        nanny.loop.add_callback(nanny.close)
    runner_thread.join(60)
    assert not runner_thread.is_alive()
    error = outcome.get("error")
    assert isinstance(error, runner.SetupError), outcome
    assert str(error) == ("no worker process has been running for 3 s (they stopped and were not restarted); "
                          "finished cases are kept: run the same command again to resume")


def test_killed_batch_resumes_without_redoing_finished_cases(tmp_path):
    """The embedded local cluster, through the command line; SIGKILL of the whole process group after the first case."""
    data = tmp_path / "scans"
    for i, first in enumerate((22, 24, 26, 28, 30)):
        _crop(data / f"site{i % 2}" / f"case{i}.nii.gz", first)
    outdir = tmp_path / "out"
    command = [sys.executable, "-m", "SpineAnalysisLib", "batch", str(data), "-o", str(outdir), "--workers", "1", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}

    first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not list(outdir.glob("cases/*/done.json")):
            assert first.poll() is None, first.communicate()
            assert time.time() < deadline, "no case finished in time"
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver, the nannies and the workers: a hard stop midway
        first.communicate()
    for _ in range(100):  # every process of the first batch is gone
        try:
            os.killpg(first.pid, 0)
            time.sleep(0.1)
        except ProcessLookupError:
            break
    else:
        pytest.fail("processes of the killed batch are still running")
    finished = {p.parent.name: p.stat().st_mtime_ns for p in outdir.glob("cases/*/done.json")}
    assert 1 <= len(finished) < 5

    second = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"{len(finished)} finished earlier, {5 - len(finished)} to run" in second.stderr and "ETA" in second.stderr
    assert "5 of 5 cases finished" in second.stdout
    done = {p.parent.name: p.stat().st_mtime_ns for p in outdir.glob("cases/*/done.json")}
    assert set(done) == {f"site{i % 2}__case{i}" for i in range(5)}
    assert all(done[name] == mtime for name, mtime in finished.items())  # not redone
    assert not [p for p in (outdir / "cases").iterdir() if p.name.startswith(".")]  # no partial folder left
    rows = _table(outdir)
    _assert_no_duplicates(rows)
    assert {r["case_id"] for r in rows} == set(done)
    assert (outdir / "errors.csv").read_text(encoding="utf-8").strip() == "case_id,path,stage,error,time"
