"""Synthetic training cases around label-only disc maps (SynthSeg-style, SpineAnalysisLib.model.synthesis)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineAnalysisLib.model import synthesis
from SpineAnalysisLib.model.classes import LABEL_TO_CHANNEL
from SpineAnalysisLib.model.dataset import default_data_dir
from SpineAnalysisLib.model.synthesis import (
    ANNULUS, CANAL, CORTEX, ENDPLATE, MARROW, NUCLEUS, build_scene, disc_map_in_frame, load_synthetic_disc_cases, render,
)  # fmt: skip
from SpineAnalysisLib.model.training import SliceSampler, TrainingConfig

LUMBAR_DISCS = (120, 121, 122, 123, 124)
BODY_TISSUES = (MARROW, ENDPLATE, CORTEX)


def _write_disc_map(path, discs_present=LUMBAR_DISCS):
    """A disc map on the label-only maps' native grid: 0.43 x 0.43 mm pixels, 4.4 mm slices, axes P, I, R.

    Five discs 20 mm deep (anterior-posterior) and 8 mm high, 30 mm apart, in the middle five of nine slices.
    Returns the array (numpy order R, I, P).
    """
    pixel = 0.4296875
    labels = np.zeros((9, 400, 120), np.uint8)  # (R, I, P)
    for index, disc in enumerate(LUMBAR_DISCS):
        if disc not in discs_present:
            continue
        top = round((20 + index * 30) / pixel)
        labels[2:7, top : top + round(8 / pixel), round(20 / pixel) : round(40 / pixel)] = disc
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((pixel, pixel, 4.4))
    image.SetDirection((0, 0, -1, 1, 0, 0, 0, -1, 0))  # as IVDLO_*: x posterior, y inferior, z right (LPS)
    sitk.WriteImage(image, str(path))
    return labels


def test_disc_map_is_brought_to_1mm_pixels_keeping_slices_and_disc_sizes(tmp_path):
    _write_disc_map(tmp_path / "map.nii.gz")
    discs, spacing = disc_map_in_frame(sitk.ReadImage(str(tmp_path / "map.nii.gz")))
    assert spacing == pytest.approx(4.4)
    assert discs.shape[0] == 9
    assert discs.shape[1:] == (172, 52)  # rows cranio-caudal (400 x 0.43 mm), columns anterior-posterior
    for disc in LUMBAR_DISCS:
        areas = [(discs[s] == disc).sum() for s in range(9)]
        assert areas[0] == areas[1] == areas[7] == areas[8] == 0
        for area in areas[2:7]:
            assert area == pytest.approx(20 * 8, rel=0.12)  # 20 mm x 8 mm at 1 mm pixels
    rows = [np.nonzero(discs == disc)[1].mean() for disc in LUMBAR_DISCS]
    assert np.all(np.diff(rows) > 0), "L1-L2 must lie above L5-S1"
    np.testing.assert_allclose(np.diff(rows), 30, atol=1.0)


def test_a_map_without_lumbar_discs_is_refused(tmp_path):
    _write_disc_map(tmp_path / "empty.nii.gz", discs_present=())
    with pytest.raises(ValueError, match="no lumbar disc"):
        disc_map_in_frame(sitk.ReadImage(str(tmp_path / "empty.nii.gz")))


def _phantom_scene(seed=0):
    discs = np.zeros((5, 180, 60), np.uint8)  # 1 mm pixels
    for index, disc in enumerate(LUMBAR_DISCS):
        discs[:, 20 + index * 30 : 28 + index * 30, 15:45] = disc
    return discs, build_scene(discs, 4.0, np.random.default_rng(seed))


def test_scene_keeps_the_discs_and_puts_a_body_between_each_pair():
    discs, scene = _phantom_scene()
    placed = scene.discs
    assert placed.shape[1] == discs.shape[1] + 2 * synthesis.MARGIN_ROWS_MM
    assert placed.shape[2] == discs.shape[2] + synthesis.MARGIN_ANTERIOR_MM + synthesis.MARGIN_POSTERIOR_MM
    for disc in LUMBAR_DISCS:
        assert (placed == disc).sum() == (discs == disc).sum()
    assert np.isin(scene.tissues[placed > 0], (NUCLEUS, ANNULUS)).all(), "a disc voxel must be rendered as disc"
    assert (scene.tissues[placed > 0] == NUCLEUS).any() and (scene.tissues[placed > 0] == ANNULUS).any()
    column = synthesis.MARGIN_ANTERIOR_MM + 30  # the middle of the discs
    for index in range(4):  # rows between disc index and index + 1 (8 mm discs, 22 mm gaps)
        top = synthesis.MARGIN_ROWS_MM + 28 + index * 30
        between = scene.tissues[2, top : top + 22, column]
        assert np.isin(between, BODY_TISSUES).all()
        assert between[0] == ENDPLATE and between[-1] == ENDPLATE and (between == MARROW).sum() >= 16
    # the series continues above L1-L2 by the step between L1-L2 and L2-L3 (30 mm): an unannotated T12-L1 disc
    above = synthesis.MARGIN_ROWS_MM + 20 - 30
    assert np.isin(scene.tissues[2, above : above + 8, column], (NUCLEUS, ANNULUS)).all()
    assert (placed[:, above : above + 8] == 0).all()
    # the spinal canal lies behind the column in the central slice
    posterior_edge = synthesis.MARGIN_ANTERIOR_MM + 45
    assert (scene.tissues[2, synthesis.MARGIN_ROWS_MM + 60, posterior_edge : posterior_edge + 20] == CANAL).sum() >= 9


def test_render_gives_a_new_contrast_each_draw_and_uniform_tissues():
    _, scene = _phantom_scene()
    first = render(scene, np.random.default_rng(1))
    again = render(scene, np.random.default_rng(1))
    other = render(scene, np.random.default_rng(2))
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.float32 and first.min() >= 0 and first.max() <= 1
    nucleus_core = synthesis._eroded_in_plane(scene.tissues == NUCLEUS, 1)
    marrow_core = synthesis._eroded_in_plane(scene.tissues == MARROW, 2)
    contrast = [image[nucleus_core].mean() - image[marrow_core].mean() for image in (first, other)]
    assert abs(contrast[0] - contrast[1]) > 0.02, "two draws should give the tissues different intensities"
    assert first[nucleus_core].std() < 0.15


def _label_only_dataset(folder):
    (folder / "labels_only").mkdir(parents=True)
    rows = []
    for number, present in ((1, LUMBAR_DISCS), (2, LUMBAR_DISCS[:3]), (3, LUMBAR_DISCS)):
        case_id = f"IVDLO_{number:02d}"
        _write_disc_map(folder / "labels_only" / f"{case_id}.nii.gz", present)
        rows.append({"case_id": case_id, "split": "shared", "kind": "labels_only", "subject_group": f"IVD_{number:02d}",
                     "label_values_present": " ".join(f"{d}:x" for d in present), "image_file": "", "label_file": f"labels_only/{case_id}.nii.gz"})  # fmt: skip
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_synthetic_cases_annotate_only_their_discs_and_leave_out_validation_subjects(tmp_path):
    _label_only_dataset(tmp_path)
    cases = load_synthetic_disc_cases(tmp_path, {"IVD_03"}, seed=5)
    assert [c.record.case_id for c in cases] == ["SYN_IVDLO_01", "SYN_IVDLO_02"]
    assert all(c.record.source == "SYN" and c.slice_spacing_mm == pytest.approx(4.4) for c in cases)
    partial = cases[1]
    assert set(np.flatnonzero(partial.annotated)) == {0} | {LABEL_TO_CHANNEL[d] for d in LUMBAR_DISCS[:3]}
    assert set(np.unique(partial.target)) == {0} | {LABEL_TO_CHANNEL[d] for d in LUMBAR_DISCS[:3]}
    again = load_synthetic_disc_cases(tmp_path, {"IVD_03"}, seed=5)
    np.testing.assert_array_equal(again[0].scene.tissues, cases[0].scene.tissues)


def test_sampler_draws_the_synthetic_share_and_renders_each_draw(tmp_path):
    from SpineAnalysisLib.model.dataset import CaseRecord, TrainingCase

    _label_only_dataset(tmp_path)
    synthetic = load_synthetic_disc_cases(tmp_path, set(), seed=0)
    target = np.zeros((3, 240, 240), np.uint8)
    target[:, 100:130, 90:130] = LABEL_TO_CHANNEL[22]
    real = [
        TrainingCase(CaseRecord(f"VB3_{i}", "VB3", f"VB3_{i}", None, Path("x"), (22,)), np.full(target.shape, 0.5, np.float16), target,
                     np.eye(1, len(LABEL_TO_CHANNEL), 0, bool)[0] | np.eye(1, len(LABEL_TO_CHANNEL), LABEL_TO_CHANNEL[22], bool)[0], np.arange(3))  # fmt: skip
        for i in range(2)
    ]
    sampler = SliceSampler(real + synthetic, TrainingConfig(batch_size=4, synthetic_disc_share=0.25))
    np.testing.assert_allclose(sampler.weights[2:].sum(), 0.25)
    np.testing.assert_allclose(sampler.weights[:2], 0.375)
    sampler = SliceSampler(synthetic, TrainingConfig(batch_size=4, synthetic_disc_share=0.25))
    images, targets, annotated = sampler.batch()
    disc_channels = {LABEL_TO_CHANNEL[d] for d in LUMBAR_DISCS}
    assert set(np.unique(targets.numpy())) <= {0} | disc_channels
    assert float(images.std()) > 0.02, "the synthetic image must be rendered, not the zero placeholder"
    assert synthetic[0].image.max() == 0, "rendering must not overwrite the stored case"


def test_bad_synthetic_disc_share_is_a_one_line_error(tmp_path, capsys):
    from SpineAnalysisLib.cli import main
    from SpineAnalysisLib.model.store import _train_command

    assert main(["train", "-o", str(tmp_path / "run"), "--synthetic-disc-share", "1"]) == 2
    assert "--synthetic-disc-share must be at least 0 and below 1" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert "--synthetic-disc-share 0.15" in _train_command(Path("run"), {"steps": 5, "synthetic_disc_share": 0.15})


SHARED = default_data_dir()


@pytest.mark.skipif(not (SHARED / "manifest.csv").is_file(), reason="../shared/data/lumbar_mri is not available")
def test_every_shared_label_only_map_gives_a_scene_with_its_disc_volumes():
    """The 49 expert maps (Menezes-Reis et al.): resampled disc volumes within 10 % of the native ones, 3 % on average.

    (Measured 2026-12-05: mean +1.6 %, largest 7.5 %, 245 discs; a pixel is disc when the disc covers half of it.)
    """
    from SpineAnalysisLib.model.dataset import read_manifest

    records = read_manifest(SHARED, kind="labels_only")
    assert len(records) >= 40
    ratios = []
    for index, record in enumerate(records):
        native = sitk.ReadImage(str(record.label_file))
        voxel_mm3 = float(np.prod(native.GetSpacing()))
        counts = np.bincount(sitk.GetArrayFromImage(native).ravel(), minlength=125)
        scene = synthesis.scene_from_file(record.label_file, np.random.default_rng(index))
        for disc in LUMBAR_DISCS:
            if counts[disc]:
                ratios.append((scene.discs == disc).sum() * scene.slice_spacing_mm / (counts[disc] * voxel_mm3))
                assert ratios[-1] == pytest.approx(1, abs=0.10), (record.case_id, disc)
        assert np.isin(scene.tissues[scene.discs > 0], (NUCLEUS, ANNULUS)).all()
        assert (scene.tissues == MARROW).sum() > (scene.discs > 0).sum(), record.case_id
    assert np.mean(ratios) == pytest.approx(1, abs=0.03)


def test_a_run_with_synthetic_discs_trains_and_records_them_in_the_model(tmp_path):
    from test_training import FIELDS, _dataset

    from SpineAnalysisLib.errors import InputError
    from SpineAnalysisLib.model.network import NetworkConfig
    from SpineAnalysisLib.model.predict import InferenceSettings
    from SpineAnalysisLib.model.store import export_run
    from SpineAnalysisLib.model.training import train

    data = tmp_path / "data"
    data.mkdir()
    _dataset(data)  # VB3_00..03 and IVD_00..01, one subject each
    network = NetworkConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=0).to_dict()
    config = TrainingConfig(steps=3, batch_size=4, crop=64, validate_every=3, threads=1, network=network, validation_fraction=0.25, synthetic_disc_share=0.5)
    with pytest.raises(InputError, match="no label-only disc map"):
        train(tmp_path / "none", config, data_dir=data, log=lambda _: None)

    (data / "labels_only").mkdir()
    with open(data / "manifest.csv", "a", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, FIELDS)
        for number in (0, 1):
            _write_disc_map(data / "labels_only" / f"IVDLO_{number:02d}.nii.gz")
            writer.writerow({"case_id": f"IVDLO_{number:02d}", "split": "shared", "kind": "labels_only", "subject_group": f"IVD_{number:02d}",
                             "label_values_present": "120:x 121:x", "image_file": "", "label_file": f"labels_only/IVDLO_{number:02d}.nii.gz"})  # fmt: skip
    messages = []
    run = tmp_path / "run"
    train(run, config, data_dir=data, log=messages.append)
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    validation_disc_subject = next(c for c in split["validation"] if c.startswith("IVD_"))
    assert split["synthetic"] == [f"SYN_IVDLO_{n:02d}" for n in (0, 1) if f"IVD_{n:02d}" != validation_disc_subject]
    assert any("1 synthetic disc cases" in m for m in messages)
    info = export_run(run, tmp_path / "model", "tiny", "0.1.0", None, InferenceSettings())
    assert info.manifest["training"]["synthetic_disc_cases"] == split["synthetic"]
    assert "--synthetic-disc-share 0.5" in info.manifest["training"]["phases"][-1]["command"]
