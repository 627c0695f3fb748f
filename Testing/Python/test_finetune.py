"""Fine-tuning from an exported dataset folder: a tiny model the test creates, a few steps on the CPU."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dicom_series import spine_phantom
from SpineAnalysisLib import annotation, finetune, imageio
from SpineAnalysisLib.cli import main
from SpineAnalysisLib.errors import InputError
from SpineAnalysisLib.model import store
from SpineAnalysisLib.model.network import NetworkConfig, build_network

TINY = NetworkConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=0)
FAST = {"batch_size": 4, "crop": 64, "learning_rate": 3e-3, "threads": 2, "log_every": 5, "checkpoint_every": 10}


def _sagittal(array, spacing=(0.8, 0.8, 4.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)  # 0.8 mm sagittal pixels: the fine-tune resamples them to 1 mm
    image.SetDirection((0, 0, -1, 1, 0, 0, 0, -1, 0))
    return image


@pytest.fixture
def dataset(tmp_path):
    folder = tmp_path / "dataset"
    for i in range(3):
        image_array, labels = spine_phantom(shape=(6, 64, 48), seed=i)
        image = _sagittal(image_array)
        original = labels.copy()
        original[original == 123] = 0
        annotation.export_training_case(image, imageio.label_map_like(labels, image), folder, f"case{i}",
                                        original_label_map=imageio.label_map_like(original, image), model="tiny 1")  # fmt: skip
    return folder


@pytest.fixture
def models(tmp_path, monkeypatch):
    """A model folder on $SPINEANALYSIS_MODELS holding a tiny, untrained base model (never $HOME)."""
    folder = tmp_path / "models"
    monkeypatch.setenv("SPINEANALYSIS_MODELS", str(folder))
    torch.manual_seed(0)
    manifest = {"name": "tiny", "version": "1", "network": TINY.to_dict(), "inference": {"slice_smoothing_sigma_mm": 1.0}}
    base = store.write_model(folder / "tiny-1", build_network(TINY).state_dict(), manifest)
    return folder, base


def test_dataset_folder_becomes_records_with_declared_labels(dataset, tmp_path):
    records = finetune.dataset_records(dataset, tmp_path / "work")
    assert [r.case_id for r in records] == ["case0", "case1", "case2"] and {r.source for r in records} == {"ANN"}
    assert records[0].annotated_labels == (22, 23, 24, 122, 123)
    resampled = sitk.ReadImage(str(records[0].label_file))
    assert resampled.GetSpacing()[:2] == (1.0, 1.0) and resampled.GetSpacing()[2] == 4.0  # in-plane 1 mm, slices kept
    assert set(np.unique(sitk.GetArrayFromImage(resampled))) == {0, 22, 23, 24, 122, 123}


def test_finetune_writes_a_new_checksummed_model_and_its_loss_decreases(dataset, models, tmp_path):
    folder, base = models
    messages = []
    # the tiny base is untrained, so its batch-norm statistics are learnt too (a real base keeps them: see below)
    result = finetune.finetune(dataset, base_model="tiny", steps=30, log=messages.append, freeze_batch_norm=False, **FAST)
    assert result.model.name == "tiny-finetuned" and result.model.version == "1"
    assert result.model.folder == (folder / "tiny-finetuned-1").resolve()  # the user model folder ($SPINEANALYSIS_MODELS)
    manifest = json.loads((result.model.folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["sha256"] == store.sha256_of(result.model.folder / "weights.pt")
    assert manifest["network"] == TINY.to_dict()  # the base model's own configuration, not the default one
    assert manifest["base_model"] == {"name": "tiny", "version": "1", "sha256": base.manifest["sha256"]}
    assert manifest["inference"] == {"slice_smoothing_sigma_mm": 1.0}  # runs the way its base model runs
    assert manifest["training"]["kind"] == "fine-tune" and manifest["validation"]["after"]["cases"] == 1
    assert manifest["training"]["config"]["class_dice_weight"] == 0.0  # the base recorded none: the loss it was trained with
    network = store.load_network(store.find_model("tiny-finetuned"))  # loadable, checksum verified
    assert sum(p.numel() for p in network.parameters()) == sum(p.numel() for p in build_network(TINY).parameters())
    assert len(result.losses) == 6 and result.last_loss < result.first_loss  # it learns
    assert result.before["level_dice"] is not None and result.after["level_dice"] > result.before["level_dice"]
    assert any(m.startswith("step 30/30") for m in messages) and any("validation before" in m for m in messages)
    assert result.train_cases and result.validation_cases and not set(result.train_cases) & set(result.validation_cases)
    assert store.find_model("tiny").version == "1"  # the base model is still what "tiny" means
    assert not (folder / ".tiny-finetuned-1.run").exists()  # run folder removed after success
    assert sorted(p.name for p in folder.iterdir()) == ["tiny-1", "tiny-finetuned-1"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(result.model.folder.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's private 0700
    with pytest.raises(InputError, match="already exists"):
        finetune.finetune(dataset, result.model.folder, base_model="tiny", steps=1, **FAST)


def test_an_interrupted_finetune_resumes_from_its_checkpoint(dataset, models, tmp_path):
    _, base = models
    target = tmp_path / "out" / "tuned"

    def interrupt(message):
        if message.startswith("step 15/"):  # logged before the step-15 checkpoint: the last one is at step 10
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune.finetune(dataset, target, base_model=str(base.folder), steps=15, log=interrupt, **FAST)
    assert not target.exists()  # nothing half-written where the model goes
    assert (tmp_path / "out" / ".tuned.run" / "checkpoint.pt").exists()
    messages = []
    result = finetune.finetune(dataset, target, base_model=str(base.folder), steps=15, log=messages.append, **FAST)
    assert any(m == "resumed from step 10" for m in messages)
    assert result.model.folder == target.resolve() and (target / "training_log.jsonl").exists()
    # by default the base model's batch-norm statistics are kept (small fine-tuning batches would shift them)
    tuned = torch.load(target / "weights.pt", weights_only=True)
    original = torch.load(base.weights_path, weights_only=True)
    statistics = [k for k in original if k.endswith(("running_mean", "running_var"))]
    assert statistics and all(torch.equal(tuned[k], original[k]) for k in statistics)
    assert not all(torch.equal(tuned[k], original[k]) for k in original)  # the weights did change


def test_mixing_with_shipped_data(dataset, models, tmp_path):
    from test_training import _dataset

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    _dataset(shipped)  # six tiny cases in the shared data's format, with a manifest.csv
    _, base = models
    result = finetune.finetune(dataset, tmp_path / "mixed", base_model=str(base.folder), steps=5, mix_shipped_data=True, shipped_data_dir=shipped, **FAST)
    assert {"case0", "case1", "case2"} & set(result.train_cases) and any(c.startswith("VB3_") for c in result.train_cases)
    assert any("mixed with" in n for n in result.notes)
    config = json.loads((result.model.folder / "manifest.json").read_text(encoding="utf-8"))["training"]["config"]
    assert config["annotated_case_weight"] > 1  # the annotated cases are not drowned by the shipped ones
    with pytest.raises(InputError, match="shipped training data not found"):
        finetune.finetune(dataset, tmp_path / "x", base_model=str(base.folder), steps=1, mix_shipped_data=True, shipped_data_dir=tmp_path, **FAST)


def test_bad_input(models, tmp_path):
    _, base = models
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no dataset.json"):
        finetune.finetune(tmp_path / "empty", tmp_path / "m", base_model=str(base.folder), steps=1, **FAST)
    with pytest.raises(InputError, match="no such dataset folder"):
        finetune.finetune(tmp_path / "missing", tmp_path / "m", base_model=str(base.folder), steps=1, **FAST)
    assert not (tmp_path / "m").exists()


def test_cli_finetune(dataset, models, tmp_path, capsys):
    _, base = models
    out = tmp_path / "cli-model"
    code = main(["finetune", str(dataset), "-o", str(out), "--base", str(base.folder), "--steps", "4", "--crop", "64", "--batch-size", "2",
                 "--summary", str(tmp_path / "summary.json")])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "model tiny-finetuned" in printed and "validation before" in printed and "validation after" in printed
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["sha256"] == store.find_model(str(out)).manifest["sha256"]
    assert main(["finetune", str(tmp_path / "nothing"), "--base", str(base.folder)]) == 2


def test_smoke_finetune_from_the_shipped_model(tmp_path):
    """The shipped model (or $SPINEANALYSIS_MODELS' spine-mri-2d): 2 steps on two tiny cases; the new model keeps the
    shipped network configuration and loads. Skipped when no shipped model is installed."""
    from SpineAnalysisLib.errors import ModelError

    try:
        shipped = store.find_model(None)
    except ModelError:
        pytest.skip("no shipped model installed")
    folder = tmp_path / "dataset"
    for i in range(2):
        image_array, labels = spine_phantom(shape=(6, 64, 48), seed=i)
        image = _sagittal(image_array)
        annotation.export_training_case(image, imageio.label_map_like(labels, image), folder, f"c{i}")
    result = finetune.finetune(folder, tmp_path / "model", steps=2, batch_size=2, threads=2, log=lambda m: None)
    assert result.model.manifest["network"] == shipped.manifest["network"]
    assert result.model.manifest["inference"] == shipped.manifest["inference"]
    assert result.model.manifest["base_model"]["sha256"] == shipped.manifest["sha256"]
    # the loss the shipped model's last phase used (its class Dice term), not the default one
    shipped_weight = shipped.manifest["training"]["config"].get("class_dice_weight", 0.0)
    assert result.model.manifest["training"]["config"]["class_dice_weight"] == shipped_weight
    store.load_network(result.model)


def test_a_structure_the_annotator_erased_is_taught_as_background(tmp_path):
    """An erased disc was 'unknown' (not declared by any case), and the gap pseudo-disc between its two bodies put
    it back into the training target: fine-tuning taught the very structure the annotator had removed."""
    from SpineAnalysisLib.model.classes import LABEL_TO_CHANNEL
    from SpineAnalysisLib.model.dataset import load_training_case

    image_array, original = spine_phantom(shape=(6, 64, 48), seed=3)
    image = _sagittal(image_array, spacing=(1.0, 1.0, 4.0))
    assert {22, 23, 122} <= set(np.unique(original).tolist())
    corrected = original.copy()
    corrected[corrected == 122] = 0  # the annotator judged the L3-L4 disc false and erased it
    annotation.export_training_case(image, imageio.label_map_like(corrected, image), tmp_path / "ds", "erased",
                                     original_label_map=imageio.label_map_like(original, image), model="tiny 1")  # fmt: skip
    (record,) = finetune.dataset_records(tmp_path / "ds")
    assert 122 in record.annotated_labels  # known absent, not unknown
    case = load_training_case(record)
    assert case.annotated[LABEL_TO_CHANNEL[122]] and not (case.target == LABEL_TO_CHANNEL[122]).any()


def _interrupted_run(dataset, base, tmp_path):
    """A 20-step fine-tune stopped at step 15 (its last checkpoint: step 10); returns its model folder."""
    target = tmp_path / "out" / "tuned"

    def interrupt(message):
        if message.startswith("step 15/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune.finetune(dataset, target, base_model=str(base.folder), steps=20, log=interrupt, **FAST)
    return target


def test_an_interrupted_finetune_is_resumed_only_with_the_same_base_and_settings(dataset, models, tmp_path):
    """A checkpoint left by an interrupted run was continued whatever the new command said: another base model (its
    manifest then named a base the weights did not come from) or another step count."""
    folder, base = models
    other = store.write_model(folder / "tiny-2", build_network(TINY).state_dict(), {**base.manifest, "version": "2"})
    target = _interrupted_run(dataset, base, tmp_path)
    for changed, expected in (({"base_model": str(other.folder)}, "another base model"), ({"steps": 30}, "another --steps")):
        arguments = {"base_model": str(base.folder), "steps": 20, **changed}
        with pytest.raises(InputError, match=f"holds an interrupted fine-tune with {expected}.*delete the folder"):
            finetune.finetune(dataset, target, log=lambda m: None, **{**FAST, **arguments})
    messages = []
    finetune.finetune(dataset, target, base_model=str(base.folder), steps=20, log=messages.append, **{**FAST, "threads": 1})
    assert "resumed from step 10" in messages  # the same command (threads aside) resumes


class _Planted:
    """A pickle that runs code when loaded without ``weights_only`` (it only touches a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_planted_in_the_run_folder_is_not_executed(dataset, models, tmp_path):
    """Resuming read the run folder's checkpoint with weights_only=False: a file planted in a shared model folder
    ran code when an annotator fine-tuned. It is now read as weights only, and refused in one line."""
    _, base = models
    target = _interrupted_run(dataset, base, tmp_path)
    checkpoint = tmp_path / "out" / ".tuned.run" / "checkpoint.pt"
    assert torch.load(checkpoint, weights_only=False)["step"] == 10
    torch.save({"network": _Planted(tmp_path / "ran")}, checkpoint)
    with pytest.raises(InputError, match="checkpoint.pt: not a checkpoint this program wrote, not loaded"):
        finetune.finetune(dataset, target, base_model=str(base.folder), steps=20, log=lambda m: None, **FAST)
    assert not (tmp_path / "ran").exists()


def test_before_and_after_figures_score_the_model_as_segment_runs_it(tmp_path, monkeypatch):
    """The figures printed before/after were the bare network's (no level-labelling step): on the sample, exported
    uncorrected, 'before' said level Dice 0.78 (T12 0.14) although `segment` matched the labels exactly."""
    from SpineAnalysisLib.errors import ModelError
    from SpineAnalysisLib.inference import segment_image

    try:
        store.find_model(None)
    except ModelError:
        pytest.skip("no shipped model installed")
    monkeypatch.setenv("SPINEANALYSIS_MODELS", str(tmp_path / "models"))
    sample = sitk.ReadImage(str(Path(__file__).resolve().parents[2] / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_image.nii.gz"))
    image = sample[:, :, 28:36]  # 8 central sagittal slices keep it fast
    labels = segment_image(image, None, "cpu").label_map
    annotation.export_training_case(image, labels, tmp_path / "ds", "sample", original_label_map=labels, model="spine-mri-2d")
    result = finetune.finetune(tmp_path / "ds", tmp_path / "model", steps=1, batch_size=1, threads=2, log=lambda m: None)
    before = result.before
    assert before["segment_vertebra_dice"] == before["segment_disc_dice"] == before["segment_level_dice"] == 1.0
    identified, identifiable = map(int, before["segment_identified"].split("/"))
    assert identified == identifiable >= 10
    after = json.loads((tmp_path / "model" / "manifest.json").read_text(encoding="utf-8"))["validation"]["after"]
    assert after == result.after and after["segment_cases"] == 1 and after["segment_vertebra_dice"] > 0.9


def test_a_second_finetune_into_the_same_run_folder_is_refused(dataset, models, tmp_path):
    """Two fine-tunes started side by side both took the next free version, shared one run folder (checkpoint, log)
    and the second ended in a traceback ('Directory not empty') when the first had written the model."""
    _, base = models
    target = tmp_path / "out" / "tuned"
    fcntl = pytest.importorskip("fcntl")
    (tmp_path / "out" / ".tuned.run").mkdir(parents=True)
    with open(tmp_path / "out" / ".tuned.run" / ".lock", "a+b") as first:  # the first one, still running
        fcntl.flock(first.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InputError, match="another fine-tune is running into this folder"):
            finetune.finetune(dataset, target, base_model=str(base.folder), steps=2, log=lambda m: None, **FAST)
    assert not target.exists()
    finetune.finetune(dataset, target, base_model=str(base.folder), steps=2, log=lambda m: None, **FAST)  # once it is done


def test_a_case_annotating_bodies_only_leaves_its_discs_unknown(dataset, tmp_path):
    """A bodies-only case (an expert map like the shared VB cases) exported beside corrected cases that declare discs
    had every disc taken as truly absent: its discs were taught as background."""
    from SpineAnalysisLib.model.classes import LABEL_TO_CHANNEL
    from SpineAnalysisLib.model.dataset import load_training_case

    image_array, labels = spine_phantom(shape=(6, 64, 48), seed=5)
    image = _sagittal(image_array, spacing=(1.0, 1.0, 4.0))
    bodies = np.where(np.isin(labels, [22, 23, 24]), labels, 0)
    annotation.export_training_case(image, imageio.label_map_like(bodies, image), dataset, "bodies-only")
    # the same with the model's output as the original: every disc "erased" is a bodies-only annotation too
    annotation.export_training_case(image, imageio.label_map_like(bodies, image), dataset, "bodies-of-model",
                                    original_label_map=imageio.label_map_like(labels, image))  # fmt: skip
    records = {r.case_id: r for r in finetune.dataset_records(dataset, tmp_path / "work")}
    assert records["bodies-only"].annotated_labels == records["bodies-of-model"].annotated_labels == (22, 23, 24)
    assert records["case0"].annotated_labels == (22, 23, 24, 122, 123)  # a full case: declared labels stay known
    case = load_training_case(records["bodies-only"])  # the gap between its bodies becomes a pseudo-disc, as for VB cases
    assert (case.target == LABEL_TO_CHANNEL[122]).any() and (case.target == LABEL_TO_CHANNEL[123]).any()


def test_cli_finetune_does_not_write_its_summary_over_an_existing_file(dataset, models, tmp_path, capsys):
    """--summary was written after the run over whatever the path held (the annotator's corrected labels, given by
    mistake, became JSON); it is now checked before any work and replaced only with --overwrite."""
    _, base = models
    labels = tmp_path / "corrected.nii.gz"
    labels.write_bytes(b"the annotator's work")
    arguments = ["finetune", str(dataset), "-o", str(tmp_path / "m"), "--base", str(base.folder), "--steps", "2", "--crop", "64", "--batch-size", "2"]
    assert main(arguments + ["--summary", str(labels)]) == 2
    assert "--summary" in capsys.readouterr().err and labels.read_bytes() == b"the annotator's work"
    (tmp_path / "old.json").write_text("{}")
    assert main(arguments + ["--summary", str(tmp_path / "old.json")]) == 2
    assert "exists; choose another name, or add --overwrite" in capsys.readouterr().err and not (tmp_path / "m").exists()
    assert main(arguments + ["--summary", str(tmp_path / "old.json"), "--overwrite"]) == 0
    assert json.loads((tmp_path / "old.json").read_text(encoding="utf-8"))["model"] == "tiny-finetuned 1"


def test_export_training_records_the_sha256_of_the_installed_model_it_names(models, tmp_path, capsys):
    """'--model tiny 1' was stored as a name and version only; fine-tuned models are numbered per model folder, so two
    annotators' 'spine-mri-2d-finetuned 1' could not be told apart in the provenance."""
    _, base = models
    image_array, labels = spine_phantom(shape=(6, 64, 48), seed=0)
    image = _sagittal(image_array)
    sitk.WriteImage(image, str(tmp_path / "image.nii.gz"))
    sitk.WriteImage(imageio.label_map_like(labels, image), str(tmp_path / "labels.nii.gz"))
    for given, case in (("tiny 1", "a"), (str(base.folder), "b"), ("elsewhere 3", "c")):
        assert main(["export-training", str(tmp_path / "image.nii.gz"), str(tmp_path / "labels.nii.gz"), "-o", str(tmp_path / "ds"),
                     "--case-id", case, "--model", given]) == 0  # fmt: skip
    model = {case: annotation.read_training_case(tmp_path / "ds", case).provenance["model"] for case in "abc"}
    assert model["a"] == model["b"] == {"name": "tiny", "version": "1", "sha256": base.manifest["sha256"]}
    assert model["c"] == {"name": "elsewhere", "version": "3"}  # not installed here: as given


def _loss_as_level_and_as_background(record, truth, left_out):
    """The real training loss of one slice of ``record``'s training case for a network that calls the ``left_out``
    structures of ``truth`` (scheme labels, canonical frame) by their level, and for one that calls them background."""
    from SpineAnalysisLib.model.classes import LABEL_TO_CHANNEL, NUM_CHANNELS
    from SpineAnalysisLib.model.dataset import load_training_case
    from SpineAnalysisLib.model.losses import partial_label_loss

    case = load_training_case(record)
    middle = truth.shape[0] // 2
    channels = np.vectorize(lambda v: LABEL_TO_CHANNEL.get(int(v), 0))(truth[middle])
    mask = np.isin(truth[middle], list(left_out))
    assert mask.sum() >= 80  # at least one structure of the slice

    def loss(classes):
        logits = 8.0 * torch.nn.functional.one_hot(torch.from_numpy(classes).long(), NUM_CHANNELS).permute(2, 0, 1)[None].float()
        target = torch.from_numpy(case.target[middle].astype(np.int64))[None]
        return float(partial_label_loss(logits, target, torch.from_numpy(case.annotated)[None], class_dice_weight=1.0))

    return loss(channels), loss(np.where(mask, 0, channels))


def test_a_partial_expert_map_leaves_the_levels_it_does_not_outline_unknown(dataset):
    """Someone else's expert map outlining some levels only (the shared IVD_11 outlines L1-L2..L5-S1, not the T12-L1 in
    view) taught every level the dataset declares and the map leaves out as background. Exported with
    annotated_levels='present', those levels are unknown: the loss is the same whether the network calls them that
    level or background (the same map under the default rule, for a corrected model output, still teaches background)."""
    from SpineAnalysisLib.model.preprocessing import sagittal_frame

    image_array, labels = spine_phantom(shape=(6, 64, 48), seed=6)
    image = _sagittal(image_array, spacing=(1.0, 1.0, 4.0))
    partial = imageio.label_map_like(np.where(labels == 123, labels, 0), image)  # L4-L5 outlined; the L3-L4 in view is not
    annotation.export_training_case(image, partial, dataset, "expert", annotated_levels="present")
    annotation.export_training_case(image, partial, dataset, "corrected")
    records = {r.case_id: r for r in finetune.dataset_records(dataset)}
    assert records["expert"].annotated_labels == (123,)
    assert records["corrected"].annotated_labels == (122, 123)  # the default rule: declared = absent (no body: bodies unknown)
    truth = sagittal_frame(image).to_canonical(labels.astype(np.int32))
    for case_id, same in (("expert", True), ("corrected", False)):
        said_level, said_background = _loss_as_level_and_as_background(records[case_id], truth, {122})
        assert (said_level == pytest.approx(said_background, abs=1e-6)) is same, (case_id, said_level, said_background)


def test_a_body_the_edge_cuts_that_was_missed_and_not_added_is_unknown(dataset):
    """A body at the top edge of the image that the model missed and the annotator did not add was taught as background
    because another case declares its level. Beyond the highest (lowest) body the anatomy puts another vertebra, so a
    level the map lacks there, at least partly in view, is unknown; one the annotator erased stays known absent."""
    from SpineAnalysisLib.model.preprocessing import sagittal_frame

    image_array, labels = spine_phantom(shape=(6, 64, 48), seed=8)
    image_array, labels = image_array[:, 8:, :], labels[:, 8:, :]  # the top edge cuts L3: 6 of its 10 rows in view
    image = _sagittal(image_array, spacing=(1.0, 1.0, 4.0))
    missed = np.where(np.isin(labels, [22, 122]), 0, labels)  # the model missed L3 and L3-L4; the annotator left them
    annotation.export_training_case(image, imageio.label_map_like(missed, image), dataset, "edge",
                                    original_label_map=imageio.label_map_like(missed, image))  # fmt: skip
    erased = np.where(labels == 122, 0, labels)  # the model's L3 there, erased by the annotator as not a vertebra
    erased[erased == 22] = 0
    annotation.export_training_case(image, imageio.label_map_like(erased, image), dataset, "erased",
                                    original_label_map=imageio.label_map_like(np.where(labels == 122, 0, labels), image))  # fmt: skip
    records = {r.case_id: r for r in finetune.dataset_records(dataset)}
    assert records["edge"].annotated_labels == (23, 24, 123)
    assert records["erased"].annotated_labels == (22, 23, 24, 123)  # erased: absent; L3-L4, never there, unknown
    assert records["case0"].annotated_labels == (22, 23, 24, 122, 123)  # a whole map keeps its declared levels
    truth = sagittal_frame(image).to_canonical(labels.astype(np.int32))
    said_level, said_background = _loss_as_level_and_as_background(records["edge"], truth, {22, 122})
    assert said_level == pytest.approx(said_background, abs=1e-6)
    said_level, said_background = _loss_as_level_and_as_background(records["erased"], truth, {22})
    assert said_level > said_background + 0.01


def test_the_weights_scored_after_finetuning_are_written_once_and_kept(dataset, models, tmp_path):
    """The new model folder was written twice: once to score it ('validation after'), then weights and manifest
    again, so the file kept was not the file scored. Now the weights stay as scored and only the manifest gets the
    after figures."""
    _, base = models
    target = tmp_path / "out" / "tuned"
    scored = {}

    def watch(message):
        if message.startswith("validation after"):
            (weights,) = (tmp_path / "out").glob(".tuned.partial-*/weights.pt")
            scored["stat"] = weights.stat()

    result = finetune.finetune(dataset, target, base_model=str(base.folder), steps=2, log=watch, **FAST)
    kept = (target / "weights.pt").stat()
    assert (kept.st_ino, kept.st_mtime_ns, kept.st_size) == (scored["stat"].st_ino, scored["stat"].st_mtime_ns, scored["stat"].st_size)
    manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["sha256"] == store.sha256_of(target / "weights.pt")
    assert manifest["validation"]["after"] == result.after and result.after["segment_cases"] >= 1
