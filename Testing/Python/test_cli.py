"""The command line: outputs on the input grid, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SpineAnalysisLib.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_image.nii.gz"
SAMPLE_LABELS = ROOT / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_labels.nii.gz"


def _small_sample(tmp_path):
    path = tmp_path / "small.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(SAMPLE))[:, :, 24:40], str(path))
    return path


def test_segment_writes_a_label_map_on_the_input_grid(segmented_crop):
    """``segment --progress`` on a crop of the sample (the shared run of conftest.segmented_crop)."""
    assert segmented_crop.status == 0
    out = "\n".join(segmented_crop.stdout)
    assert "progress: 1.0000 done" in out and "levels:" in out
    image, labels = sitk.ReadImage(str(segmented_crop.image)), sitk.ReadImage(str(segmented_crop.labels))
    assert labels.GetSize() == image.GetSize()
    np.testing.assert_allclose(labels.GetOrigin(), image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(labels.GetDirection(), image.GetDirection(), atol=1e-6)
    assert sitk.GetArrayFromImage(labels).max() > 0


def test_analyze_writes_every_output(tmp_path):
    assert main(["analyze", str(_small_sample(tmp_path)), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 0
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"labels.nii.gz", "measurements.csv", "measurements.json", "landmarks.json", "report.png", "summary.json"} <= names
    header = (tmp_path / "out" / "measurements.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("structure,level,parameter,value,unit")
    assert (tmp_path / "out" / "report.png").read_bytes()[:4] == b"\x89PNG"
    # stage times (benchmark_cases.py reads them): the segmentation's, then measuring and the report
    stages = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))["stages"]
    assert {"prepare_s", "localise_s", "segment_s", "label_s", "box_fraction", "measure_s", "report_s"} <= set(stages)
    assert 0 < stages["box_fraction"] <= 1 and all(stages[k] >= 0 for k in ("segment_s", "measure_s", "report_s"))


def test_measure_on_expert_labels(tmp_path):
    assert main(["measure", str(SAMPLE), str(SAMPLE_LABELS), "-o", str(tmp_path)]) == 0
    rows = (tmp_path / "measurements.csv").read_text(encoding="utf-8").splitlines()
    assert any(row.startswith("vertebra,L3,height_anterior_mm,") for row in rows)
    landmarks = json.loads((tmp_path / "landmarks.json").read_text(encoding="utf-8"))  # where each value was measured
    (l3,) = [r for r in landmarks["records"] if (r["structure"], r["level"]) == ("vertebra", "L3")]
    assert landmarks["coordinates"] == "LPS" and set(l3["points"]) == {"L3 AS", "L3 AI", "L3 PS", "L3 PI"}
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"  # the picture with the quality banner, as analyze writes


def test_bad_input_is_one_line_with_status_2(tmp_path, capsys):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image")
    assert main(["segment", str(broken), "-o", str(tmp_path / "x.nii.gz")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("spineanalysis: error:") and "\n" not in error
    assert not (tmp_path / "x.nii.gz").exists()


def test_grid_mismatch_in_measure_is_named(tmp_path, capsys):
    labels = sitk.ReadImage(str(SAMPLE_LABELS))[:, :, 1:]
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    assert main(["measure", str(SAMPLE), str(tmp_path / "labels.nii.gz"), "-o", str(tmp_path / "out")]) == 2
    assert "different grids" in capsys.readouterr().err


def test_export_model_names_an_unreadable_evaluation_file(tmp_path, capsys):
    missing = tmp_path / "missing.json"
    assert main(["export-model", str(tmp_path), "-o", str(tmp_path / "model"), "--evaluation", str(missing)]) == 2
    assert "cannot read the evaluation" in capsys.readouterr().err and not (tmp_path / "model").exists()
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"dice": 1}')
    assert main(["export-model", str(tmp_path), "-o", str(tmp_path / "model"), "--fast-evaluation", str(wrong)]) == 2
    assert "not the JSON of 'spineanalysis evaluate -o'" in capsys.readouterr().err
    assert main(["export-model", str(tmp_path), "-o", str(tmp_path / "model"), "--calibration", str(wrong)]) == 2
    assert "not the JSON of 'Testing/DataChecks/calibrate_inference.py -o' (no mean_body_dice)" in capsys.readouterr().err


def test_the_command_line_makes_waiting_torch_threads_sleep_unless_the_user_chose():
    """OMP_WAIT_POLICY must be set before torch loads OpenMP: running the command line sets PASSIVE and keeps a user's
    value; importing it (the Slicer module imports cli.options into Slicer's own process) leaves the environment alone."""
    probe = ("import os, sys\nfrom SpineAnalysisLib.cli import main, options\nprint(os.environ.get('OMP_WAIT_POLICY', '-'))\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "-"  # importing changed nothing
    assert out[-2:] == ["PASSIVE", "False"]  # set by main, before torch loads, so its OpenMP runtime reads the value
    out = subprocess.run([sys.executable, "-c", probe], env={**environment, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "ACTIVE" and out[-2] == "ACTIVE"
