"""Bad files and output paths are refused in one line, exit status 2, before any model runs (issue 27 item 5).

"Before any model runs" is proven without mocks: the refusals run in a fresh interpreter that must exit
without ever importing torch, so no network can have been loaded; and the output folder is not created.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bad_files import SAMPLE, SAMPLE_LABELS, header_bigger_than_data, truncated_gz
from SpineAnalysisLib.cli import main

ROOT = Path(__file__).resolve().parents[2]
_PROBE = (
    "import contextlib, io, json, sys\n"
    "from SpineAnalysisLib.cli import main\n"
    "results = []\n"
    "for arguments in json.loads(sys.argv[1]):\n"
    "    out, err = io.StringIO(), io.StringIO()\n"
    "    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
    "        try:\n"
    "            status = main(arguments)\n"
    "        except SystemExit as stop:\n"
    "            status = stop.code\n"
    "    results.append({'status': status, 'stdout': out.getvalue(), 'stderr': err.getvalue(), 'torch': 'torch' in sys.modules})\n"
    "print(json.dumps(results))\n"
)


def _refused_without_torch(commands: list[list], cwd: Path) -> list[str]:
    """Run the commands one after another in one fresh interpreter; assert for each: exit status 2, nothing on
    stdout, one error line, and torch still not imported after it; return the error lines.

    One interpreter for all (instead of one each) saves an interpreter start and the library import per command;
    torch is checked after every command, so a command that imported it is still named."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps([[str(a) for a in c] for c in commands])], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.stdout, done.stderr)
    errors = []
    for arguments, result in zip(commands, json.loads(done.stdout)):
        assert result["status"] == 2 and result["stdout"] == "" and not result["torch"], (arguments, result)
        error = result["stderr"].strip()
        assert error.startswith("spineanalysis: error: ") and "\n" not in error, (arguments, error)
        errors.append(error)
    assert len(errors) == len(commands)
    return errors


@pytest.fixture
def bad_inputs(tmp_path):
    return {"truncated": truncated_gz(tmp_path / "truncated.nii.gz"), "header": header_bigger_than_data(tmp_path / "short.nii.gz")}


@pytest.mark.parametrize("kind", ["truncated", "header"])
@pytest.mark.parametrize("command", ["analyze", "segment", "measure"])
def test_damaged_nifti_is_refused_by_every_case_command(tmp_path, bad_inputs, capsys, kind, command):
    bad = bad_inputs[kind]
    out = tmp_path / ("labels.nii.gz" if command == "segment" else "out")
    arguments = {"analyze": [bad], "segment": [bad], "measure": [bad, SAMPLE_LABELS]}[command]
    assert main([command, *map(str, arguments), "-o", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"spineanalysis: error: {bad}: not a readable image") and "\n" not in error
    assert ("compressed data ends early" if kind == "truncated" else "the header describes 2293760 voxels of 8 bits (2293760 bytes after offset 352), but the file holds only 143360 bytes") in error
    assert not out.exists()


def test_damaged_label_map_is_refused_by_measure(tmp_path, capsys):
    bad = truncated_gz(tmp_path / "labels.nii.gz", 3000)
    assert main(["measure", str(SAMPLE), str(bad), "-o", str(tmp_path / "out")]) == 2
    assert "compressed data ends early" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_output_and_argument_mistakes_are_refused_before_any_model_runs(tmp_path):
    (tmp_path / "existing_file").write_text("keep me")
    (tmp_path / "somedir").mkdir()
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "measurements.csv").write_text("earlier results")
    image = str(SAMPLE)
    cases = [
        (["analyze", image, "-o", "existing_file"], "is a file; the output must be a folder"),
        (["analyze", image, "-o", "existing_file/out"], "is a file, so no folder can be made inside it"),
        (["segment", image, "-o", "somedir"], "is a folder; the label map is a file"),
        (["segment", image, "-o", "labels.png"], "must be written as .nii.gz, .nii, .seg.nrrd, .nrrd, .mha, .mhd"),
        (["segment", image, "-o", "labels.nii.gz", "--summary", "summary.txt"], "the summary must be written as .json"),
        (["analyze", image, "-o", "new", "--age", "-5"], "age: -5.0 is not a plausible age"),
        (["analyze", image, "-o", "new", "--threads", "0"], "threads: expected 1 to"),
        (["analyze", str(SAMPLE_LABELS), "-o", "new"], "looks like a label map or mask, not a scan"),
        (["analyze", image, "-o", "earlier"], "the folder is not empty (measurements.csv); choose a new folder, or add --overwrite"),
        (["measure", image, str(SAMPLE_LABELS), "-o", "earlier"], "add --overwrite"),
        (["batch", image, "-o", "existing_file"], "is a file; the output must be a folder"),
        (["batch", image, "-o", "earlier"], "not an earlier run's output (no batch.json)"),
        (["batch", image, "-o", "new", "--workers", "0"], "workers: expected at least 1"),
    ]
    if Path("/proc").is_dir() and sys.platform.startswith("linux"):
        cases.append((["analyze", image, "-o", "/proc/spineanalysis-out"], "cannot write in /proc"))
    for (arguments, expected), error in zip(cases, _refused_without_torch([arguments for arguments, _ in cases], tmp_path)):
        assert expected in error, arguments
    assert not (tmp_path / "new").exists() and not (tmp_path / "labels.nii.gz").exists()
    assert (tmp_path / "existing_file").read_text() == "keep me" and [p.name for p in earlier.iterdir()] == ["measurements.csv"]


def test_analyze_refuses_nan_voxels_before_the_model_runs(tmp_path):
    """The measurements refuse an image with NaN voxels, so 'analyze' ran the model, wrote labels.nii.gz and then
    stopped with that error: a half-filled OUTDIR (NIfTI readers turn NaN into 0, so an NRRD carries them here)."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.Cast(sitk.ReadImage(str(SAMPLE))[:, :, 28:36], sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array[0, :2] = np.nan
    scan = sitk.GetImageFromArray(array)
    scan.CopyInformation(image)
    sitk.WriteImage(scan, str(tmp_path / "scan.nrrd"))
    error = _refused_without_torch([["analyze", "scan.nrrd", "-o", "out"]], tmp_path)[0]
    assert error == "spineanalysis: error: scan.nrrd: 448 voxels are NaN or infinite"
    assert not (tmp_path / "out").exists()


def test_segment_replaces_an_existing_label_map_only_with_overwrite(tmp_path):
    existing = tmp_path / "labels.nii.gz"
    existing.write_bytes(b"corrected by hand")
    assert "exists; choose another name, or add --overwrite" in _refused_without_torch([["segment", SAMPLE, "-o", existing]], tmp_path)[0]
    assert existing.read_bytes() == b"corrected by hand"


def test_dicom_and_table_exports_replace_an_existing_file_only_with_overwrite(tmp_path):
    """dicom-seg and export-measurements used to replace any existing -o file without a word."""
    kept = {name: f"made by the user: {name}" for name in ("corrected.nii.gz", "seg.dcm", "table.csv")}
    for name, text in kept.items():
        (tmp_path / name).write_text(text)
    cases = [
        (["dicom-seg", "--read", "seg.dcm", SAMPLE, "-o", "corrected.nii.gz"], "-o corrected.nii.gz: exists; choose another name, or add --overwrite"),
        (["dicom-seg", SAMPLE, SAMPLE_LABELS, "-o", "seg.dcm"], "-o seg.dcm: exists; choose another name, or add --overwrite"),
        (["export-measurements", SAMPLE, SAMPLE_LABELS, "-o", "table.csv"], "-o table.csv: exists; choose another name, or add --overwrite"),
        (["export-measurements", SAMPLE, SAMPLE_LABELS, "-o", "table.png"], "the table must be written as .csv"),
    ]
    for (arguments, expected), error in zip(cases, _refused_without_torch([arguments for arguments, _ in cases], tmp_path)):
        assert expected in error, arguments
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == kept


def test_export_measurements_replaces_its_table_with_overwrite(tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("an earlier export")
    assert main(["export-measurements", str(SAMPLE), str(SAMPLE_LABELS), "-o", str(table), "--overwrite"]) == 0
    assert table.read_text().startswith("PatientID,StudyInstanceUID,SeriesInstanceUID,Modality,structure,level")


def test_overwrite_never_replaces_the_command_s_own_input(tmp_path):
    """'segment scan.nii.gz -o scan.nii.gz --overwrite' (a slip of tab completion) replaced the scan by its labels."""
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(SAMPLE.read_bytes())
    labels = tmp_path / "labels.nii.gz"
    labels.write_bytes(SAMPLE_LABELS.read_bytes())
    cases = [
        (["segment", "scan.nii.gz", "-o", "scan.nii.gz", "--overwrite"], "-o scan.nii.gz: is the input scan.nii.gz; choose another name"),
        (["segment", scan, "-o", "scan.nii.gz", "--overwrite"], "is the input"),
        (["dicom-seg", "--read", "seg.dcm", "labels.nii.gz", "-o", "labels.nii.gz", "--overwrite"], "is the input labels.nii.gz"),
    ]
    for (arguments, expected), error in zip(cases, _refused_without_torch([arguments for arguments, _ in cases], tmp_path)):
        assert expected in error, arguments
    assert scan.read_bytes() == SAMPLE.read_bytes() and labels.read_bytes() == SAMPLE_LABELS.read_bytes()


def test_segment_writes_the_summary_json_that_matches_its_stdout(segmented_crop):
    """``segment --summary --progress`` on a crop of the sample (the shared run of conftest.segmented_crop)."""
    image, labels, summary = segmented_crop.image, segmented_crop.labels, segmented_crop.summary
    assert segmented_crop.status == 0
    out = segmented_crop.stdout
    record = json.loads(summary.read_text(encoding="utf-8"))
    assert record["image"] == str(image.absolute()) and record["labels"] == str(labels.absolute())
    assert f"levels: {', '.join(record['levels']) or 'none'}" in out
    assert out[-1] == f"{record['seconds']:.1f} s on {record['device']} with {record['model']}"
    assert {"confidence", "anchor", "flags", "warnings"} <= set(record)
    from SpineAnalysisLib.background import parse_line

    progress = [parse_line(line) for line in out if line.startswith("progress:")]
    assert progress and all(event.is_progress for event in progress) and progress[-1].fraction == 1.0
