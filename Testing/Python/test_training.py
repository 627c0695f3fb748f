"""A real (tiny) training run: partial labels, checkpoints, resume, logged metrics."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SpineAnalysisLib.model.network import NetworkConfig
from SpineAnalysisLib.model.training import TrainingConfig, train

FIELDS = ["case_id", "split", "kind", "label_values_present", "subject_group", "image_file", "label_file"]


def _write_case(folder, case_id, annotated, rng):
    """A sagittal stack in the shared data's orientation (axes I, P, R) with bodies and discs."""
    labels = np.zeros((12, 64, 72), np.uint8)  # numpy (R, P, I)
    image = rng.normal(40, 8, labels.shape)
    for i, level in enumerate([21, 22, 23]):
        top = 6 + i * 22
        labels[3:9, 20:44, top : top + 14] = level
        image[3:9, 20:44, top : top + 14] = 90
        labels[3:9, 22:42, top + 14 : top + 20] = 100 + level if i < 2 else 0
        image[3:9, 22:42, top + 14 : top + 20] = 160
    labels[~np.isin(labels, annotated)] = 0
    for name, array in (("images", image.astype(np.uint8)), ("labels", labels)):
        item = sitk.GetImageFromArray(array)
        item.SetDirection((0, 0, -1, 0, 1, 0, -1, 0, 0))
        (folder / name).mkdir(exist_ok=True)
        sitk.WriteImage(item, str(folder / name / f"{case_id}.nii.gz"))
    return {"case_id": case_id, "split": "shared", "kind": "image+labels", "label_values_present": " ".join(f"{v}:x" for v in annotated),
            "subject_group": case_id, "image_file": f"images/{case_id}.nii.gz", "label_file": f"labels/{case_id}.nii.gz"}


@pytest.fixture(autouse=True)
def deterministic_cudnn():
    """On a GPU machine, resumed runs must match whole runs bit for bit: cuDNN's autotuned kernels are not deterministic."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def _narrow_and_widened(narrow_config, wide_config, seed):
    """A random network and the same weights widened to more input slices (both in eval mode)."""
    from SpineAnalysisLib.model.network import build_network, inflate_input_channels

    torch.manual_seed(seed)
    narrow = build_network(narrow_config).eval()
    wide = build_network(wide_config)
    wide.load_state_dict(inflate_input_channels(narrow.state_dict(), wide))
    return narrow, wide.eval()


def _dataset(folder):
    rng = np.random.default_rng(0)
    rows = [_write_case(folder, f"VB3_{i:02d}", [21, 22, 23], rng) for i in range(4)]
    rows += [_write_case(folder, f"IVD_{i:02d}", [121, 122], rng) for i in range(2)]
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def test_tiny_training_run_checkpoints_and_resumes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _dataset(data)
    network = NetworkConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=0).to_dict()
    config = TrainingConfig(steps=50, batch_size=4, crop=64, validate_every=50, checkpoint_every=25, threads=1, network=network, validation_fraction=0.25)
    run = tmp_path / "run"
    messages = []
    train(run, TrainingConfig(**{**config.__dict__, "steps": 25}), data_dir=data, log=messages.append)
    assert (run / "checkpoint.pt").exists()
    weights = train(run, config, data_dir=data, log=messages.append)
    assert any("resumed from step 25" in m for m in messages)
    assert weights.exists()
    records = [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 2 and losses[-1] < losses[0]  # it learns
    validation = [r["validation"] for r in records if "validation" in r]
    assert validation and validation[-1]["vertebra"] is not None
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    assert not set(split["train"]) & set(split["validation"])

    # the run becomes a checksummed model folder that inference can load
    from SpineAnalysisLib.model.store import export_run, find_model, load_network

    evaluation = {"summary": {"dice_vertebra": 0.5}}
    from SpineAnalysisLib.model.predict import InferenceSettings

    settings = InferenceSettings(slice_smoothing_sigma_mm=1.5, test_time_scales=(0.9, 1.0, 1.1), body_probability_threshold=0.6)
    info = export_run(run, tmp_path / "model", "tiny", "0.1.0", evaluation, settings, earlier_minutes=10)
    manifest = find_model(str(tmp_path / "model")).manifest
    assert manifest["inference"] == {"slice_smoothing_sigma_mm": 1.5, "test_time_scales": [0.9, 1.0, 1.1], "body_probability_threshold": 0.6, "test_time_mirror": False}
    assert InferenceSettings.from_manifest(manifest) == settings
    assert manifest["validation"] == {"dice_vertebra": 0.5}
    assert manifest["training"]["train_cases"] == split["train"] and manifest["training"]["wall_clock_minutes"] >= 0
    load_network(info)
    first_phase = manifest["training"]["phases"]
    assert [p["phase"] for p in first_phase] == [1] and first_phase[0]["from"] == "random initialisation"
    assert first_phase[0]["command"].startswith(f"spineanalysis train -o {run} --steps 50 --batch-size 4")
    from SpineAnalysisLib.model.training import describe_hardware

    assert first_phase[0]["hardware"] == describe_hardware(torch.device("cuda" if torch.cuda.is_available() else "cpu"), 1)
    shipped_log = [json.loads(line) for line in (info.folder / "training_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["phase"] for r in shipped_log} == {1} and len(shipped_log) == len(records)

    # a run continued from that model becomes its phase 2: history, log and cost carried over
    from SpineAnalysisLib.model.store import initial_weights

    second = tmp_path / "run2"
    continued = TrainingConfig(**{**config.__dict__, "steps": 5, "validate_every": 100, "initialised_from": str(info.folder)})
    train(second, continued, data_dir=data, log=messages.append, initial_state=initial_weights(str(info.folder)))
    calibration = {"command": "python Testing/DataChecks/calibrate_inference.py", "mean_body_dice": {"3 scales, threshold 0.55": 0.9}}
    child = export_run(second, tmp_path / "model2", "tiny", "0.2.0", None, settings, change="five more steps", fast_evaluation={"summary": {"dice_vertebra": 0.4}}, calibration=calibration)
    assert child.manifest["validation_fast"] == {"dice_vertebra": 0.4} and "validation_fast" not in manifest
    assert child.manifest["inference_calibration"] == calibration and child.manifest["description"].startswith("2D sagittal")
    phases = child.manifest["training"]["phases"]
    assert [p["phase"] for p in phases] == [1, 2] and phases[0] == first_phase[0]
    assert phases[1]["from"] == f"tiny 0.1.0 ({info.folder})" and phases[1]["change"] == "five more steps" and phases[1]["steps"] == 5
    assert f"--init-from {info.folder}" in phases[1]["command"]
    assert child.manifest["training"]["wall_clock_minutes"] == round(sum(p["wall_clock_minutes"] for p in phases), 1)
    child_log = [json.loads(line) for line in (child.folder / "training_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["phase"] for r in child_log[: len(shipped_log)]] == [1] * len(shipped_log) and child_log[-1]["phase"] == 2


def test_continued_training_starts_from_given_weights(tmp_path):
    import torch

    from SpineAnalysisLib.errors import ModelError
    from SpineAnalysisLib.model.store import initial_weights

    data = tmp_path / "data"
    data.mkdir()
    _dataset(data)
    network = NetworkConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=0).to_dict()
    config = TrainingConfig(steps=10, batch_size=2, crop=64, validate_every=100, checkpoint_every=100, threads=1, network=network)
    first = train(tmp_path / "first", config, data_dir=data, log=lambda m: None)
    start = initial_weights(str(first))
    continued_config = TrainingConfig(**{**config.__dict__, "steps": 1, "learning_rate": 1e-9, "initialised_from": str(first)})
    continued = train(tmp_path / "second", continued_config, data_dir=data, log=lambda m: None, initial_state=start)
    after = torch.load(continued, weights_only=True)
    moved = max(float((after[k].float() - start[k].float()).abs().max()) for k in start if start[k].is_floating_point() and "running" not in k)
    assert moved < 1e-3  # one step at a negligible learning rate: still the given weights, not a fresh initialisation
    assert json.loads((tmp_path / "second" / "training_config.json").read_text(encoding="utf-8"))["initialised_from"] == str(first)
    # exported, a run continued from a bare weights file has no known history: the stated earlier minutes stand in for it
    from SpineAnalysisLib.model.store import export_run

    exported = export_run(tmp_path / "second", tmp_path / "model", "tiny", "0.1.0", earlier_minutes=10)
    phases = exported.manifest["training"]["phases"]
    assert phases[0]["from"].startswith("unknown") and phases[0]["wall_clock_minutes"] == 10 and phases[1]["from"] == str(first)
    assert exported.manifest["training"]["wall_clock_minutes"] >= 10

    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="not a loadable weights file"):
        initial_weights(str(broken))
    with pytest.raises(ModelError, match="not found"):
        initial_weights("no-such-model")


def test_source_weights_change_how_often_cases_are_drawn():
    from types import SimpleNamespace

    from SpineAnalysisLib.model.training import SliceSampler

    cases = [SimpleNamespace(record=SimpleNamespace(source=source), scene=None) for source in ("VB1", "VB3", "VB3", "IVD")]
    sampler = SliceSampler(cases, TrainingConfig(disc_case_weight=2.0, source_weights={"VB1": 3.0}))
    np.testing.assert_allclose(sampler.weights, np.array([3.0, 1.0, 1.0, 2.0]) / 7.0)


def test_bad_source_weight_is_a_one_line_error(tmp_path, capsys):
    from SpineAnalysisLib.cli import main

    for bad in ("VB1", "VB1=x", "=2", "VB1=-1", "VB1=inf", "VB1=nan"):  # inf: NaN sampling weights after loading the data
        assert main(["train", "-o", str(tmp_path / "run"), "--source-weight", bad]) == 2
        assert "--source-weight" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_known_label_error_is_unknown_in_training_but_scored_as_published_in_validation(tmp_path):
    """Through the NIfTI files: VB3_36's L4 (model.dataset.KNOWN_LABEL_ERRORS) and its L3-L4 gap disc are unknown
    and not annotated in the training target; the validation target keeps them as the experts drew them."""
    from SpineAnalysisLib.model.classes import LABEL_TO_CHANNEL
    from SpineAnalysisLib.model.dataset import UNKNOWN, load_training_case, load_validation_case, read_manifest

    rows = [_write_case(tmp_path, case_id, [21, 22, 23], np.random.default_rng(0)) for case_id in ("VB3_36", "VB3_35")]
    with open(tmp_path / "manifest.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    listed, unlisted = read_manifest(tmp_path)
    training, validation, other = load_training_case(listed), load_validation_case(listed), load_training_case(unlisted)
    np.testing.assert_array_equal(validation.target, other.target)
    np.testing.assert_array_equal(validation.annotated, other.annotated)
    l4, l3_l4, l2_l3 = LABEL_TO_CHANNEL[23], LABEL_TO_CHANNEL[122], LABEL_TO_CHANNEL[121]
    assert (validation.target == l4).any() and (validation.target == l3_l4).any()
    assert (training.target[validation.target == l4] == UNKNOWN).all() and (training.target[validation.target == l3_l4] == UNKNOWN).all()
    assert not (training.target == l4).any() and not (training.target == l3_l4).any()
    assert not training.annotated[[l4, l3_l4]].any() and validation.annotated[[l4, l3_l4]].all()
    assert training.annotated[l2_l3] and ((training.target == l2_l3) == (validation.target == l2_l3)).all()
    assert not (validation.target == UNKNOWN).any()


def test_outline_unknown_trains_only_its_source_and_is_recorded_in_the_train_command(tmp_path, capsys):
    from SpineAnalysisLib.cli import main
    from SpineAnalysisLib.model.dataset import UNKNOWN, load_training_case, read_manifest
    from SpineAnalysisLib.model.store import _train_command

    data = tmp_path / "data"
    data.mkdir()
    _dataset(data)
    record = read_manifest(data)[0]
    plain, banded = load_training_case(record), load_training_case(record, 2.0)
    assert not (plain.target == UNKNOWN).any() and (banded.target == UNKNOWN).any()
    assert ((banded.target != UNKNOWN) <= (banded.target == plain.target)).all()  # only the band changes
    network = NetworkConfig(channels=(8, 16), strides=(2,), num_res_units=0).to_dict()
    config = TrainingConfig(steps=2, batch_size=2, crop=64, validate_every=2, threads=1, network=network, validation_fraction=0.25,
                            class_dice_weight=1.0, outline_unknown_mm={"VB3": 2.0})
    train(tmp_path / "run", config, data_dir=data, log=lambda message: None)
    saved = json.loads((tmp_path / "run" / "training_config.json").read_text(encoding="utf-8"))
    assert "--outline-unknown VB3=2" in _train_command(tmp_path / "run", saved)
    for bad in ("VB1", "VB1=x", "VB1=0", "VB1=0.5", "VB1=inf"):  # inf: an OverflowError after loading the data
        assert main(["train", "-o", str(tmp_path / "bad"), "--outline-unknown", bad]) == 2
        assert "--outline-unknown" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_2d_weights_widen_to_a_25d_network_that_computes_the_same(tmp_path):
    """Inflating a 2D network's input to three slices keeps its output while the neighbours' weights are 0;
    the widened network then trains (the neighbours' weights move) and predicts a volume."""
    from SpineAnalysisLib.model.network import gather_slices, input_slice_offsets
    from SpineAnalysisLib.model.predict import predict_volume

    flat = NetworkConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    wide = NetworkConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1, in_channels=3, slice_context_mm=3.0)
    flat_net, wide_net = _narrow_and_widened(flat, wide, seed=0)
    x = torch.rand(2, 1, 32, 32)
    neighbours = torch.cat([torch.rand(2, 1, 32, 32), x, torch.rand(2, 1, 32, 32)], dim=1)
    assert torch.allclose(flat_net(x), wide_net(neighbours), atol=1e-5)

    # input slices: 3 mm apart is 3 slices of a 1 mm scan, the adjacent slice of a 4 mm scan; edges repeat
    assert input_slice_offsets(wide, 1.0) == (-3, 0, 3) and input_slice_offsets(wide, 4.0) == (-1, 0, 1)
    assert input_slice_offsets(flat, 1.0) == (0,)
    volume = np.arange(5)[:, None, None] * np.ones((5, 2, 2))
    assert gather_slices(volume, [0, 4], (-1, 0, 1))[:, :, 0, 0].tolist() == [[0, 0, 1], [3, 4, 4]]
    with pytest.raises(ValueError, match="odd"):
        NetworkConfig(in_channels=2, slice_context_mm=3.0)
    with pytest.raises(ValueError, match="slice_context_mm"):
        NetworkConfig(in_channels=3)

    # prediction feeds the neighbours: a 2.5D network on a volume gives one class per voxel
    classes, _ = predict_volume(wide_net, np.random.default_rng(0).random((6, 32, 32)).astype(np.float32), torch.device("cpu"), slice_spacing_mm=1.0)
    assert classes.shape == (6, 32, 32)

    # training a 2.5D network from the 2D weights: the neighbours' input weights leave zero
    data = tmp_path / "data"
    data.mkdir()
    _dataset(data)
    config = TrainingConfig(steps=4, batch_size=2, crop=64, validate_every=100, checkpoint_every=100, threads=1, network=wide.to_dict())
    weights = train(tmp_path / "run", config, data_dir=data, log=lambda m: None, initial_state=flat_net.state_dict())
    trained = torch.load(weights, weights_only=True)
    first = [k for k, v in trained.items() if v.ndim == 4 and v.shape[1] == 3]
    assert first and all(float(trained[k][:, [0, 2]].abs().max()) > 0 for k in first)
    from SpineAnalysisLib.model.store import _train_command

    from SpineAnalysisLib.model.store import export_run

    exported = export_run(tmp_path / "run", tmp_path / "model", "tiny25d", "0.1.0")
    assert exported.manifest["description"].startswith("2.5D (each slice with 1 neighbour(s) on either side, 3 mm apart) sagittal")
    assert exported.manifest["network"]["in_channels"] == 3
    from SpineAnalysisLib.model.store import load_network

    assert load_network(exported).input_config == wide  # the loaded network is fed neighbours again
    assert "--slice-context-mm 3" in _train_command(tmp_path / "run", json.loads((tmp_path / "run" / "training_config.json").read_text(encoding="utf-8")))


def test_25d_weights_widen_to_more_neighbours_that_compute_the_same(tmp_path, capsys):
    """A network fed 3 slices widened to 5 (``--context-slices 2``) keeps its output while the outer
    neighbours' weights are 0; it is fed slices -2d..2d apart, and its training command repeats the option."""
    from SpineAnalysisLib.cli import main
    from SpineAnalysisLib.model.network import input_slice_offsets
    from SpineAnalysisLib.model.store import _train_command

    three = NetworkConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1, in_channels=3, slice_context_mm=3.0)
    five = NetworkConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1, in_channels=5, slice_context_mm=3.0)
    narrow, wide = _narrow_and_widened(three, five, seed=1)
    x = torch.rand(2, 5, 32, 32)
    assert torch.allclose(narrow(x[:, 1:4]), wide(x), atol=1e-5)
    widened = [k for k, v in wide.state_dict().items() if v.ndim == 4 and v.shape[1] == 5]
    assert widened and all(float(wide.state_dict()[k][:, [0, 4]].abs().max()) == 0 for k in widened)
    assert input_slice_offsets(five, 1.0) == (-6, -3, 0, 3, 6) and input_slice_offsets(five, 4.0) == (-2, -1, 0, 1, 2)

    config = {"steps": 5, "network": five.to_dict(), "initialised_from": "Resources/Models/spine-mri-2d"}
    assert "--slice-context-mm 3 --context-slices 2" in _train_command(tmp_path / "run", config)
    assert "--context-slices" not in _train_command(tmp_path / "run", {"steps": 5, "network": three.to_dict()})

    for arguments, message in ((["--context-slices", "2"], "needs --slice-context-mm"), (["--slice-context-mm", "3", "--context-slices", "0"], "1 to 4")):
        assert main(["train", "-o", str(tmp_path / "bad"), "--steps", "1", *arguments]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_model_gets_new_inference_settings_with_the_same_weights(tmp_path, capsys):
    from SpineAnalysisLib.cli import main
    from SpineAnalysisLib.model.network import build_network
    from SpineAnalysisLib.model.store import find_model, load_network, write_model

    config = NetworkConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=0)
    history = {"phases": [{"phase": 1, "steps": 5}], "wall_clock_minutes": 1.0}
    source = write_model(
        tmp_path / "model", build_network(config).state_dict(),
        {"name": "tiny", "version": "0.1.0", "network": config.to_dict(), "training": history, "validation": {"dice_vertebra": 0.5},
         "inference": {"slice_smoothing_sigma_mm": 1.0, "test_time_scales": [1.0], "body_probability_threshold": 0.0}},
    )
    (source.folder / "training_log.jsonl").write_text('{"phase": 1, "step": 5}\n', encoding="utf-8")
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({"summary": {"dice_vertebra": 0.6}}), encoding="utf-8")
    retune = ["export-model", str(source.folder), "-o", str(tmp_path / "model2"), "--version", "0.1.1", "--test-time-scales", "0.8,1,1.2", "--body-threshold", "0.55", "--test-time-mirror"]

    assert main(retune) == 2  # what changed must be said
    assert "--change" in capsys.readouterr().err and not (tmp_path / "model2").exists()
    assert main([*retune, "--change", "five zooms", "--evaluation", str(evaluation)]) == 0
    retuned = find_model(str(tmp_path / "model2"))
    assert retuned.version == "0.1.1" and retuned.manifest["sha256"] == source.manifest["sha256"]
    assert retuned.weights_path.read_bytes() == source.weights_path.read_bytes()
    assert retuned.manifest["inference"] == {"slice_smoothing_sigma_mm": 1.0, "test_time_scales": [0.8, 1.0, 1.2], "body_probability_threshold": 0.55, "test_time_mirror": True}
    assert retuned.manifest["training"] == history and (retuned.folder / "training_log.jsonl").read_text(encoding="utf-8") == '{"phase": 1, "step": 5}\n'
    assert retuned.manifest["inference_changes"] == [{"version": "0.1.1", "from": "tiny 0.1.0", "change": "five zooms"}]
    assert retuned.manifest["validation"] == {"dice_vertebra": 0.6}
    load_network(retuned)

    # without a new evaluation the old figures are not carried over; a corrupt model is refused before anything is written
    assert main([*retune[:3], str(tmp_path / "model3"), *retune[4:], "--change", "no evaluation"]) == 0
    assert "missing" in find_model(str(tmp_path / "model3")).manifest["validation"]
    source.weights_path.write_bytes(b"corrupt")
    assert main([*retune[:3], str(tmp_path / "model4"), *retune[4:], "--change", "x"]) == 2
    assert "corrupt" in capsys.readouterr().err and not (tmp_path / "model4").exists()


def test_random_centres_bring_the_outermost_level_into_crops():
    """Crops centred on the labels' centre never reach a level far from it; centred on random labelled pixels they do."""
    from types import SimpleNamespace

    from SpineAnalysisLib.model.classes import LABEL_TO_CHANNEL
    from SpineAnalysisLib.model.training import SliceSampler

    target = np.zeros((2, 400, 64), np.int64)
    target[:, 20:380, 20:44] = LABEL_TO_CHANNEL[21]
    target[:, 0:20, 20:44] = LABEL_TO_CHANNEL[17]  # the outermost level, 170-190 rows from the centre
    case = SimpleNamespace(
        scene=None, record=SimpleNamespace(source="VB1"), image=np.random.default_rng(0).random((2, 400, 64), dtype=np.float32), target=target,
        annotated=np.ones(len(LABEL_TO_CHANNEL), bool), labelled_slices=np.arange(2), slice_spacing_mm=1.0,
    )

    def crops_with_outermost_level(fraction: float) -> int:
        sampler = SliceSampler([case], TrainingConfig(batch_size=8, crop=64, random_centre_fraction=fraction))
        return sum(int((targets == LABEL_TO_CHANNEL[17]).flatten(1).any(1).sum()) for targets in (sampler.batch()[1] for _ in range(8)))

    assert crops_with_outermost_level(0.0) == 0
    assert crops_with_outermost_level(1.0) > 0


def test_bad_random_centre_fraction_is_a_one_line_error(tmp_path, capsys):
    from SpineAnalysisLib.cli import main

    assert main(["train", "-o", str(tmp_path / "run"), "--random-centre-fraction", "1.5"]) == 2
    assert "--random-centre-fraction must be between 0 and 1" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_augmentation_strength_scales_the_geometric_augmentation():
    """At strength 0 a crop is the slice shifted (a labelled rectangle keeps its exact size); at 1 it is rotated and zoomed."""
    from types import SimpleNamespace

    from SpineAnalysisLib.model.classes import LABEL_TO_CHANNEL
    from SpineAnalysisLib.model.store import _train_command
    from SpineAnalysisLib.model.training import SliceSampler

    target = np.zeros((1, 300, 300), np.int64)
    target[0, 140:160, 135:165] = LABEL_TO_CHANNEL[22]  # 20 x 30 pixels, always inside a 224-pixel crop
    case = SimpleNamespace(
        scene=None, record=SimpleNamespace(source="VB3"), image=np.random.default_rng(0).random((1, 300, 300), dtype=np.float32), target=target,
        annotated=np.ones(len(LABEL_TO_CHANNEL), bool), labelled_slices=np.arange(1), slice_spacing_mm=1.0,
    )

    def labelled_pixels(strength: float) -> set[int]:
        sampler = SliceSampler([case], TrainingConfig(batch_size=16, crop=224, augmentation_strength=strength))
        assert sampler.augmenter.strength == strength
        return {int(n) for n in (sampler.batch()[1] == LABEL_TO_CHANNEL[22]).flatten(1).sum(1)}

    assert labelled_pixels(0.0) == {600}
    assert len(labelled_pixels(1.0)) > 8
    assert "--augmentation-strength 0.5" in _train_command(Path("run"), {"steps": 5, "augmentation_strength": 0.5})


def test_bad_augmentation_strength_is_a_one_line_error(tmp_path, capsys):
    from SpineAnalysisLib.cli import main

    assert main(["train", "-o", str(tmp_path / "run"), "--augmentation-strength", "2"]) == 2
    assert "--augmentation-strength must be between 0 and 1" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_weight_average_is_the_mean_of_the_steps_and_keeps_integer_buffers():
    from SpineAnalysisLib.model.training import WeightAverage

    network = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    average = WeightAverage()
    for value in (1.0, 2.0, 6.0):
        with torch.no_grad():
            network[0].weight.fill_(value)
        network[1].num_batches_tracked.fill_(int(value))
        average.update(network)
    assert average.count == 3
    assert torch.allclose(average.state["0.weight"], torch.full_like(network[0].weight, 3.0))
    assert int(average.state["1.num_batches_tracked"]) == 6  # a counter, not averaged
    average.state["0.weight"] += 1  # the average owns its tensors: the network is untouched
    assert float(network[0].weight.detach().max()) == 6.0


def test_learning_rate_stays_constant_while_weights_are_averaged():
    from SpineAnalysisLib.model.training import learning_rate_factor

    plain = [learning_rate_factor(s, 100, 10) for s in range(100)]
    assert plain[0] == 0.1 and plain[9] > 0.97 and plain[99] < 0.01 and abs(plain[50] - 0.5) < 1e-9
    averaged = [learning_rate_factor(s, 100, 10, average_after=50) for s in range(100)]
    assert averaged[:51] == plain[:51] and set(averaged[50:]) == {plain[50]}


def test_batch_norm_statistics_are_measured_afresh():
    from SpineAnalysisLib.model.training import recompute_batch_norm

    network = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1, bias=False), torch.nn.BatchNorm2d(1))
    with torch.no_grad():
        network[0].weight.fill_(2.0)
    network[1].running_mean.fill_(-50.0)  # stale statistics, as averaged along a trajectory
    generator = torch.Generator().manual_seed(0)
    recompute_batch_norm(network, lambda: 3.0 + torch.randn(4, 1, 8, 8, generator=generator), 20, torch.device("cpu"))
    assert abs(float(network[1].running_mean) - 6.0) < 0.1  # 2 x mean 3
    assert abs(float(network[1].running_var) - 4.0) < 0.3  # 2^2 x variance 1
    assert network[1].momentum == 0.1 and not network.training


def test_averaged_run_writes_both_weights_and_resumes_to_the_same_average(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _dataset(data)
    network = NetworkConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=0).to_dict()
    config = TrainingConfig(steps=12, batch_size=2, crop=64, validate_every=100, checkpoint_every=6, threads=1, network=network,
                            validation_fraction=0.25, average_weights_from=0.5, log_every=1)  # fmt: skip
    whole = train(tmp_path / "whole", config, data_dir=data, log=lambda m: None)

    def interrupt_at_step_8(message):
        if message.startswith("step 8/"):
            raise KeyboardInterrupt  # killed mid-run: the last checkpoint is step 6's, two averaged steps in

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "split", config, data_dir=data, log=interrupt_at_step_8)
    messages = []
    split = train(tmp_path / "split", config, data_dir=data, log=messages.append)
    assert any("resumed from step 6" in m for m in messages)
    assert any("mean of the weights of the last 6 steps" in m for m in messages)
    averaged, last = torch.load(whole, weights_only=True), torch.load(tmp_path / "whole" / "network_last.pt", weights_only=True)
    assert max(float((averaged[k] - last[k]).abs().max()) for k in averaged if averaged[k].is_floating_point()) > 0
    resumed = torch.load(split, weights_only=True)
    assert all(torch.allclose(averaged[k].float(), resumed[k].float(), atol=1e-6) for k in averaged)
    records = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["averaged_steps"] for r in records if "validation_averaged" in r] == [6]


def test_bad_average_weights_share_is_a_one_line_error(tmp_path, capsys):
    from SpineAnalysisLib.cli import main

    assert main(["train", "-o", str(tmp_path / "run"), "--average-weights-from", "1"]) == 2
    assert "--average-weights-from must be at least 0 and below 1" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_another_sampling_seed_keeps_the_fixed_validation_split(tmp_path):
    from SpineAnalysisLib.model.dataset import SPLIT_SEED, read_manifest, split_cases

    data = tmp_path / "data"
    data.mkdir()
    _dataset(data)
    records = read_manifest(data)
    fixed = [r.case_id for r in split_cases(records, 0.25, SPLIT_SEED)[1]]
    assert [r.case_id for r in split_cases(records, 0.25, 7)[1]] != fixed  # seed 7 alone would split otherwise
    network = NetworkConfig(channels=(8, 16), strides=(2,), num_res_units=0).to_dict()
    config = TrainingConfig(steps=1, batch_size=2, crop=64, validate_every=1, threads=1, network=network, validation_fraction=0.25, seed=7)
    train(tmp_path / "run", config, data_dir=data, log=lambda message: None)
    assert json.loads((tmp_path / "run" / "split.json").read_text(encoding="utf-8"))["validation"] == fixed


def test_class_dice_term_trains_and_is_recorded_in_the_train_command(tmp_path, capsys):
    from SpineAnalysisLib.cli import main
    from SpineAnalysisLib.model.store import _train_command

    data = tmp_path / "data"
    data.mkdir()
    _dataset(data)
    network = NetworkConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=0).to_dict()
    config = TrainingConfig(steps=50, batch_size=4, crop=64, validate_every=50, threads=1, network=network, validation_fraction=0.25, class_dice_weight=1.0)
    train(tmp_path / "run", config, data_dir=data, log=lambda message: None)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 2 and losses[-1] < losses[0]
    saved = json.loads((tmp_path / "run" / "training_config.json").read_text(encoding="utf-8"))
    assert "--class-dice-weight 1" in _train_command(tmp_path / "run", saved)
    assert main(["train", "-o", str(tmp_path / "bad"), "--class-dice-weight", "-1"]) == 2
    assert "--class-dice-weight must be between 0 and 10" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_rician_noise_has_the_requested_snr_and_the_rician_floor():
    """On a two-level phantom: the tissue's noise SD is signal / SNR, and the dark background becomes
    the Rayleigh floor sigma * sqrt(pi / 2) (Gudbjartsson & Patz 1995), not zero-mean noise."""
    from SpineAnalysisLib.model.augment import otsu_threshold, rician_noise

    image = np.zeros((200, 200), np.float32)
    image[:, 100:] = 0.5
    assert 0.0 < otsu_threshold(image) < 0.5
    noisy = rician_noise(image, snr=10.0, rng=np.random.default_rng(1))
    sigma = 0.05
    assert abs(noisy[:, 100:].std() - sigma) < 0.003
    assert abs(noisy[:, 100:].mean() - 0.5) < 0.005
    assert abs(noisy[:, :100].mean() - sigma * np.sqrt(np.pi / 2)) < 0.002


def test_rician_noise_of_a_blank_crop_is_pure_noise_not_an_error():
    """A constant crop has no Otsu cut: its noise is relative to its own value (zero stays zero), not a crash."""
    from SpineAnalysisLib.model.augment import otsu_threshold, rician_noise

    assert otsu_threshold(np.full((3, 8, 8), 0.25, np.float32)) == 0.25
    assert (rician_noise(np.zeros((3, 64, 64), np.float32), snr=5.0, rng=np.random.default_rng(0)) == 0).all()
    noisy = rician_noise(np.full((3, 64, 64), 0.5, np.float32), snr=5.0, rng=np.random.default_rng(0))
    assert abs(noisy.std() - 0.1) < 0.01


def test_rician_noise_share_adds_noise_to_that_share_of_crops():
    from types import SimpleNamespace

    from SpineAnalysisLib.model.classes import LABEL_TO_CHANNEL
    from SpineAnalysisLib.model.store import _train_command
    from SpineAnalysisLib.model.training import SliceSampler

    image = np.zeros((1, 300, 300), np.float32)
    image[0, 135:165, 135:165] = 1.0  # the crop corner below never reaches it (shifts up to 60 px)
    target = np.zeros((1, 300, 300), np.int64)
    target[0, 140:160, 135:165] = LABEL_TO_CHANNEL[22]
    case = SimpleNamespace(
        scene=None, record=SimpleNamespace(source="VB3"), image=image, target=target,
        annotated=np.ones(len(LABEL_TO_CHANNEL), bool), labelled_slices=np.arange(1), slice_spacing_mm=1.0,
    )

    def background_noise(share: float) -> np.ndarray:
        config = TrainingConfig(batch_size=32, crop=224, augmentation_strength=0.0, rician_noise_share=share)
        sampler = SliceSampler([case], config)
        sampler.augmenter.intensity = lambda x: x  # only the geometry and the noise under test
        images = sampler.batch()[0]
        return images[:, 0, :20, :20].flatten(1).std(1).numpy()  # a corner outside the bright square

    assert (background_noise(0.0) == 0).all()
    noisy = (background_noise(1.0) > 0).mean()
    assert noisy == 1.0
    assert 0.2 < (background_noise(0.5) > 0).mean() < 0.8
    assert "--rician-noise-share 0.3" in _train_command(Path("run"), {"steps": 5, "rician_noise_share": 0.3})


def test_bad_rician_noise_share_is_a_one_line_error(tmp_path, capsys):
    from SpineAnalysisLib.cli import main

    assert main(["train", "-o", str(tmp_path / "run"), "--rician-noise-share", "1.5"]) == 2
    assert "--rician-noise-share must be between 0 and 1" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_augmenter_without_rician_noise_draws_as_before_the_option():
    """With the share 0 a crop is the sequence the augmenter had before ``--rician-noise-share`` existed
    (geometry, resolution, inversion draw, contrast transforms) on a twin with the same seed, draw for draw:
    an extra random draw would shift every later crop of an old run."""
    from SpineAnalysisLib.model.augment import SliceAugmenter

    rng = np.random.default_rng(7)
    image, target = rng.random((3, 260, 240)).astype(np.float32), np.zeros((260, 240), np.int64)
    current, twin = SliceAugmenter(96, seed=11, strength=1.0), SliceAugmenter(96, seed=11, strength=1.0)
    for _ in range(20):
        got, _ = current(image, target, (130.0, 120.0))
        old, _ = twin.geometry(image, target, (130.0, 120.0))
        old = twin.resolution(old)
        if twin.rng.random() < 0.1 * twin.strength:
            old = 1.0 - old
        assert torch.equal(got, torch.as_tensor(twin.intensity(old), dtype=torch.float32))
