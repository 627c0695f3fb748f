"""Repair by re-detection (SpineAnalysisLib.model.repair): the noise estimate, the choice between two
passes, and the real pipeline on a real sample made noisy (shipped model, a 24-slice crop)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from degrade import degraded

from SpineAnalysisLib import labels as scheme
from SpineAnalysisLib.evaluation import identification
from SpineAnalysisLib.inference import PassResult, segment_image
from SpineAnalysisLib.model import repair
from SpineAnalysisLib.model.labelling import LabellingReport
from SpineAnalysisLib.shipped import sample_image, sample_labels

SPACING = (4.0, 1.0, 1.0)


def _smooth_volume():
    rows, columns = np.meshgrid(np.linspace(0, 1, 120), np.linspace(0, 1, 100), indexing="ij")
    return np.repeat((0.3 + 0.4 * np.sin(3 * rows) * np.cos(2 * columns))[None], 6, axis=0).astype(np.float32)


def test_the_noise_estimate_recovers_a_known_noise_level():
    volume = _smooth_volume()
    noisy = volume + np.random.default_rng(1).normal(0, 0.05, volume.shape).astype(np.float32)
    estimate = repair.noise_level(noisy)
    assert abs(estimate["sigma"] - 0.05) < 0.005, estimate
    assert repair.noise_level(volume)["snr"] > 100  # a smooth image is not noisy


def _pass(levels: dict[int, float], uncertain=False, confidence=1.0, anchor="S1"):
    """A pass whose bodies (label -> row mm) are 20 x 20 x 20 mm cubes on a (10, 300, 80) canonical grid."""
    labels = np.zeros((10, 300, 80), np.uint16)
    for label, row in levels.items():
        labels[:, int(row) - 10 : int(row) + 10, 30:50] = label
    report = LabellingReport(levels=[scheme.structure_name(v) for v in sorted(levels, key=scheme.anatomical_rank)], confidence=confidence,
                             anchor=anchor, levels_uncertain=uncertain)
    return PassResult(labels, report, {})


L1_L4 = {20: 40, 21: 75, 22: 110, 23: 145}
NOISY = {"sigma": 0.2, "snr": 2.0}


def test_a_certain_second_pass_replaces_an_uncertain_first():
    first, second = _pass({20: 40, 22: 110, 23: 145}, uncertain=True, confidence=0.3), _pass(L1_L4)
    kept, record = repair.choose(first, second, ["the first pass's levels are uncertain"], NOISY, SPACING)
    assert kept is second and record["kept"] == "second" and not kept.report.levels_uncertain
    assert any(f.startswith("repair tried") and "kept the second pass" in f for f in kept.report.flags)


def test_passes_that_name_the_bodies_differently_make_the_levels_uncertain():
    shifted = {21: 40, 22: 75, 23: 110, 24: 145}  # the same bodies counted from another anchor
    first, second = _pass(L1_L4), _pass(shifted)
    kept, record = repair.choose(first, second, ["the image is noisy"], NOISY, SPACING)
    assert kept is first and kept.report.levels_uncertain and kept.report.confidence == 0.5
    assert any("names the bodies differently" in f for f in kept.report.flags)


def test_agreeing_passes_confirm_the_levels_and_the_one_with_more_bodies_is_kept():
    first, second = _pass({21: 75, 22: 110, 23: 145}), _pass(L1_L4)
    kept, record = repair.choose(first, second, ["the image is noisy"], NOISY, SPACING)
    assert kept is second and not kept.report.levels_uncertain and record["reason_kept"].endswith("labels more bodies")
    first, second = _pass(L1_L4), _pass({21: 75, 22: 110, 23: 145})
    kept, _ = repair.choose(first, second, ["the image is noisy"], NOISY, SPACING)
    assert kept is first and not kept.report.levels_uncertain


def test_a_failing_second_pass_leaves_the_first_uncertain():
    first, second = _pass({20: 40, 22: 110}, uncertain=True, confidence=0.3), _pass({20: 40, 23: 145}, uncertain=True, confidence=0.3)
    kept, record = repair.choose(first, second, ["the first pass's levels are uncertain"], NOISY, SPACING)
    assert kept is first and kept.report.levels_uncertain and record["kept"] == "first"
    assert record["reason_kept"] == "the second pass's chain also fails the checks"


def test_the_reason_says_when_the_first_pass_found_nothing():
    first, second = _pass({}, uncertain=True, confidence=0.0), _pass({20: 40, 23: 145}, uncertain=True, confidence=0.3)
    kept, record = repair.choose(first, second, ["the first pass found no vertebra"], NOISY, SPACING)
    assert kept is first and record["reason_kept"] == "the first pass found no vertebra and the second pass's chain fails the checks"


@pytest.fixture(scope="module")
def sample_crop():
    return sitk.ReadImage(str(sample_image()))[:, :, 20:44], sitk.ReadImage(str(sample_labels()))[:, :, 20:44]


def test_a_noisy_real_scan_is_segmented_twice_and_is_never_certain_and_wrong(sample_crop):
    """The bundled sample with Rician noise at SNR 2 (relative to its tissue signal): the noise estimate
    triggers the second pass, the summary says so and which pass was kept; whatever is kept, the levels
    are either marked uncertain or named where the expert's are (VerSe rule)."""
    image, expert = sample_crop
    fractions = []
    result = segment_image(degraded(image, snr=2.0, seed=7), device="cpu", progress=lambda f, _message: fractions.append(f))
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # the progress bar never steps back
    summary = result.summary()
    assert summary["repair"]["tried"] and summary["repair"]["kept"] in ("first", "second")
    assert any("the image is noisy" in why for why in summary["repair"]["why"])
    assert any(f.startswith("repair tried") for f in summary["flags"])
    assert "repair_segment_s" in result.stages
    if not result.report.levels_uncertain:
        found, total, errors = identification(sitk.GetArrayFromImage(result.label_map), sitk.GetArrayFromImage(expert), image, [20, 21, 22, 23, 24])
        assert not errors, (errors, summary["flags"])


def test_on_a_noisy_scan_levels_not_counted_from_the_sacrum_are_uncertain():
    first, second = _pass(L1_L4, anchor="L3"), _pass(L1_L4, anchor="L3")  # both passes agree, anchored on L3
    kept, record = repair.choose(first, second, ["the image is noisy"], NOISY, SPACING)
    assert kept.report.levels_uncertain and record["levels_uncertain"]
    assert any("not from a recognised sacrum" in f for f in kept.report.flags)
    first, second = _pass(L1_L4, anchor="L3"), _pass(L1_L4, anchor="L3")
    kept, _ = repair.choose(first, second, ["the first pass's levels are uncertain"], {"sigma": 0.01, "snr": 40.0}, SPACING)
    assert not kept.report.levels_uncertain  # a clean scan may be counted from another anchor


def test_denoising_copies_each_filtered_slice_while_its_image_is_alive():
    """filter_slices once read a NumPy view of a temporary SimpleITK image after the image was freed: a batch worker
    segfaulted on a Siegen scan whose repair pass ran. With glibc told to unmap every freed buffer above 64 kB the
    read of freed memory crashes every time (exit -11 before the fix), so the check runs in its own process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import threading, numpy as np\n"
            "from SpineAnalysisLib.model import repair\n"
            "volume = np.random.default_rng(0).random((6, 300, 300), dtype=np.float32)\n"
            "thread = threading.Thread(target=lambda: repair.denoise(volume, (4.0, 1.0, 1.0)))\n"
            "thread.start(); thread.join()\n")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(root)}
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")[-2000:]
