"""Shipped and user models: a folder per model with ``manifest.json`` and the weights file.

A manifest names the model, its version, the weights file and its sha256, the network
configuration, the output channels (scheme labels), the expected input and validation metrics.
Loading verifies the checksum first and then reads the weights with ``torch.load(weights_only=True)``
(tensors only, no arbitrary pickle).

Finding models (search path, manifests, checksum) lives in the torch-free :mod:`.catalog` and is
re-exported here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..errors import ModelError
from .catalog import DEFAULT_MODEL, MANIFEST, ModelInfo, find_model, list_models, model_folders, read_model_manifest, sha256_of
from .classes import CHANNEL_LABELS
from .network import NetworkConfig, build_network
from .predict import InferenceSettings

#: The training history shipped next to a model's weights (every phase's log records, tagged with the phase).
TRAINING_LOG = "training_log.jsonl"

__all__ = ["DEFAULT_MODEL", "MANIFEST", "ModelInfo", "export_run", "find_model", "initial_weights", "list_models", "load_network", "model_folders", "read_model_manifest", "retune_model", "sha256_of", "weights_problem", "write_manifest", "write_model"]


def weights_problem(info: ModelInfo) -> str:
    """Why the model's weights file cannot be used (missing, no checksum, checksum differs), or ''."""
    path = info.weights_path
    if not path.is_file():
        return f"model {info.label}: weights file {path} is missing"
    expected = info.manifest.get("sha256")
    if not expected:
        return f"model {info.label}: the manifest gives no sha256 for {path.name}"
    actual = sha256_of(path)
    if actual != expected:
        return f"model {info.label}: {path.name} is corrupt or was changed (sha256 {actual[:12]}..., manifest says {expected[:12]}...)"
    return ""


def load_network(info: ModelInfo, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Verify the checksum, then load the weights safely into a fresh network."""
    path = info.weights_path
    problem = weights_problem(info)
    if problem:
        raise ModelError(problem)
    if list(info.manifest.get("channel_labels", CHANNEL_LABELS)) != list(CHANNEL_LABELS):
        raise ModelError(f"model {info.label}: its output channels do not match this version of SpineAnalysis")
    try:
        network = build_network(NetworkConfig.from_dict(info.manifest["network"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ModelError(f"model {info.label}: its manifest's network description is invalid ({type(error).__name__}: {error})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as error:  # unpickling refused, wrong shapes, truncated file
        raise ModelError(f"model {info.label}: weights could not be loaded ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None
    return network.to(device).eval()


def initial_weights(source: str) -> dict:
    """Weights to start training from: a model (name, name@version or folder; checksum verified) or a weights file.

    A weights file (e.g. a run's ``network.pt``) is loaded with ``weights_only=True``.
    """
    path = Path(source)
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ModelError(f"{source}: not a loadable weights file ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None
    return load_network(find_model(source)).state_dict()


def write_model(folder: Path, state_dict: dict, manifest: dict, weights_name: str = "weights.pt") -> ModelInfo:
    """Save weights (half precision floats to keep the file small) and a manifest with their checksum."""
    folder.mkdir(parents=True, exist_ok=True)
    compact = {k: (v.half() if v.is_floating_point() else v) for k, v in state_dict.items()}
    weights = folder / weights_name
    torch.save(compact, weights)
    manifest = dict(manifest, weights=weights_name, sha256=sha256_of(weights), channel_labels=list(CHANNEL_LABELS))
    write_manifest(folder, manifest)
    return ModelInfo(manifest["name"], str(manifest["version"]), folder, manifest)


def write_manifest(folder: Path, manifest: dict) -> None:
    """(Re)write a model folder's manifest only: figures measured on the written model are added without
    writing its weights again."""
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def export_run(
    run_dir: Path, folder: Path, name: str = DEFAULT_MODEL, version: str = "1.0.0", evaluation: dict | None = None,
    inference: InferenceSettings = InferenceSettings(slice_smoothing_sigma_mm=1.0), earlier_minutes: float = 0.0,
    change: str = "", fast_evaluation: dict | None = None, calibration: dict | None = None,
) -> ModelInfo:
    """Turn a training run (``network.pt``, ``split.json``, ``training_config.json``, ``log.jsonl``) into a model folder.

    ``inference`` is stored as the model's way of running (see
    :class:`SpineAnalysisLib.model.predict.InferenceSettings`). When the run continued from a model
    (``train --init-from MODEL``), that model's training phases and ``training_log.jsonl`` are carried
    over and this run becomes the next phase (``change`` says what was different), so the manifest
    states the whole training history and cost; ``earlier_minutes`` is the training time of a run
    continued from a bare weights file, which has no history to carry. ``evaluation`` and
    ``fast_evaluation`` are the JSON of ``spineanalysis evaluate -o`` without and with ``--fast``;
    ``calibration`` the JSON of ``Testing/DataChecks/calibrate_inference.py -o`` (how the inference
    settings were chosen on training cases), stored as ``inference_calibration``.
    """
    run_dir = Path(run_dir)
    state = torch.load(run_dir / "network.pt", map_location="cpu", weights_only=True)
    config = json.loads((run_dir / "training_config.json").read_text(encoding="utf-8"))
    split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    run_minutes = max((r.get("elapsed_s", 0) for r in log), default=0) / 60
    phases, earlier_log, origin = _earlier_phases(config.get("initialised_from", ""), earlier_minutes)
    hardware = next((r["hardware"] for r in reversed(log) if "hardware" in r), None)
    if hardware is None:  # runs from before the log named the machine
        hardware = next((p["hardware"] for p in reversed(phases) if "hardware" in p), "not recorded")
    phase = {
        "phase": len(phases) + 1,
        "from": origin,
        "steps": config["steps"],
        "learning_rate": config["learning_rate"],
        "disc_case_weight": config.get("disc_case_weight"),
        "source_weights": config.get("source_weights", {}),
        "wall_clock_minutes": round(run_minutes, 1),
        "hardware": hardware,
        "command": _train_command(run_dir, config),
    }
    if change:
        phase["change"] = change
    phases.append(phase)
    manifest = {
        "name": name,
        "version": version,
        "description": f"{_network_kind(config['network'])} sagittal U-Net (MONAI) predicting vertebral bodies T10-S1 and discs T10-T11..L5-S1 per level; levels made consistent by SpineAnalysisLib.model.labelling",
        "network": config["network"],
        "expected_input": {
            "modality": "MR (T1, T2, STIR/TIRM, Dixon/water-fat); CT is refused",
            "orientation": "any; processed as sagittal slices (axial/coronal stacks are reformatted, with a warning)",
            "in_plane_spacing_mm": 1.0,
            "intensity": "robust percentile normalisation (0.5-99.5 %) per volume",
        },
        "training": {
            "data": "../shared/data/lumbar_mri (FastCleverSeg redistribution of MyoSegmenTUM, Chu 2015, Zukic 2014, Menezes-Reis 2016)",
            "train_cases": split["train"],
            "validation_cases": split["validation"],
            # label-only disc maps the last phase trained on as synthetic images (SynthSeg-style, model.synthesis)
            **({"synthetic_disc_cases": split["synthetic"]} if split.get("synthetic") else {}),
            "config": {k: v for k, v in config.items() if k != "network"},
            "wall_clock_minutes": round(sum(p.get("wall_clock_minutes", 0) for p in phases), 1),
            "hardware": "; ".join(dict.fromkeys(p.get("hardware", "not recorded") for p in phases)),
            "phases": phases,
        },
        "inference": inference.validated().to_dict(),
        "validation": (evaluation or {}).get("summary", {}),
    }
    if fast_evaluation:
        manifest["validation_fast"] = fast_evaluation.get("summary", {})
    if calibration:
        manifest["inference_calibration"] = calibration
    info = write_model(Path(folder), state, manifest)
    lines = earlier_log + [json.dumps({"phase": phase["phase"], **record}) for record in log]
    (info.folder / TRAINING_LOG).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return info


def retune_model(
    source: ModelInfo, folder: Path, version: str, inference: InferenceSettings, change: str,
    evaluation: dict | None = None, fast_evaluation: dict | None = None, calibration: dict | None = None,
) -> ModelInfo:
    """A new version of a model with the same weights and other inference settings (e.g. more test-time zooms).

    The weights file is copied byte for byte after its checksum is verified (the sha256 stays the
    same), the training history and log are kept, and ``inference_changes`` records what changed
    from which version. The validation metrics must be measured again with the new settings:
    ``evaluation`` (and ``fast_evaluation``, ``calibration``) replace the old ones; without them the
    manifest states that the metrics are missing rather than keeping figures the settings did not give.
    """
    load_network(source)  # checksum and loadability, before anything is written
    folder = Path(folder)
    manifest = {k: v for k, v in source.manifest.items() if k not in ("validation", "validation_fast", "inference_calibration")}
    manifest["version"] = version
    manifest["inference"] = inference.validated().to_dict()
    manifest["inference_changes"] = [*source.manifest.get("inference_changes", []), {"version": version, "from": source.label, "change": change}]
    manifest["validation"] = (evaluation or {}).get("summary", {"missing": f"not measured with the settings of {version}"})
    if fast_evaluation:
        manifest["validation_fast"] = fast_evaluation.get("summary", {})
    if calibration:
        manifest["inference_calibration"] = calibration
    folder.mkdir(parents=True, exist_ok=True)
    for path in (source.weights_path, source.folder / TRAINING_LOG):
        if path.is_file() and path.resolve() != (folder / path.name).resolve():
            shutil.copyfile(path, folder / path.name)
    write_manifest(folder, manifest)
    return ModelInfo(manifest["name"], str(version), folder, manifest)


def _network_kind(network: dict) -> str:
    """'2D', or '2.5D (each slice with its neighbours 3 mm away)' for a network fed neighbouring slices."""
    config = NetworkConfig.from_dict(network)
    if not config.neighbours:
        return "2D"
    return f"2.5D (each slice with {config.neighbours} neighbour(s) on either side, {config.slice_context_mm:g} mm apart)"


def _earlier_phases(initialised_from: str, earlier_minutes: float) -> tuple[list[dict], list[str], str]:
    """Training phases and log lines of the model a run continued from (nothing for a fresh run), and what it started from."""
    if not initialised_from:
        return [], [], "random initialisation"
    if Path(initialised_from).is_file():  # a bare weights file: its history is not known
        return [{"phase": 1, "from": "unknown (weights file)", "weights": initialised_from, "wall_clock_minutes": round(earlier_minutes, 1)}], [], initialised_from
    try:
        parent = find_model(initialised_from)
    except ModelError:  # exported where the starting model is not installed
        return [{"phase": 1, "from": f"unknown ({initialised_from} not found)", "wall_clock_minutes": round(earlier_minutes, 1)}], [], initialised_from
    training = parent.manifest.get("training", {})
    phases = [{"hardware": training.get("hardware", "not recorded"), **p} for p in training.get("phases", [])]
    if not phases:
        phases = [{"phase": 1, "model": parent.label, "wall_clock_minutes": training.get("wall_clock_minutes", round(earlier_minutes, 1)), "hardware": training.get("hardware", "not recorded")}]
    log_file = parent.folder / TRAINING_LOG
    lines = [line for line in log_file.read_text(encoding="utf-8").splitlines() if line.strip()] if log_file.is_file() else []
    return phases, lines, f"{parent.label} ({initialised_from})"


def _train_command(run_dir: Path, config: dict) -> str:
    """The ``spineanalysis train`` command line that repeats a run."""
    options = {
        "--steps": "steps", "--batch-size": "batch_size", "--seed": "seed", "--learning-rate": "learning_rate",
        "--validate-every": "validate_every", "--disc-case-weight": "disc_case_weight", "--threads": "threads",
        "--random-centre-fraction": "random_centre_fraction", "--average-weights-from": "average_weights_from",
        "--augmentation-strength": "augmentation_strength", "--synthetic-disc-share": "synthetic_disc_share",
        "--class-dice-weight": "class_dice_weight", "--rician-noise-share": "rician_noise_share",
    }
    parts = ["spineanalysis", "train", "-o", str(run_dir)]
    for flag, key in options.items():
        if key in config:
            parts += [flag, f"{config[key]:g}" if isinstance(config[key], float) else str(config[key])]
    for flag, key in (("--source-weight", "source_weights"), ("--outline-unknown", "outline_unknown_mm")):
        for source, value in sorted(config.get(key, {}).items()):
            parts += [flag, f"{source}={value:g}"]
    if config.get("network", {}).get("slice_context_mm"):
        parts += ["--slice-context-mm", f"{config['network']['slice_context_mm']:g}"]
        neighbours = (config["network"].get("in_channels", 3) - 1) // 2
        if neighbours != 1:
            parts += ["--context-slices", str(neighbours)]
    if config.get("initialised_from"):
        parts += ["--init-from", config["initialised_from"]]
    return " ".join(parts)
