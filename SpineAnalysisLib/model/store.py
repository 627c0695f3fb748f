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
from pathlib import Path

import torch

from ..errors import ModelError
from .catalog import DEFAULT_MODEL, MANIFEST, ModelInfo, find_model, list_models, model_folders, read_model_manifest, sha256_of
from .classes import CHANNEL_LABELS
from .network import NetworkConfig, build_network
from .predict import InferenceSettings

__all__ = ["DEFAULT_MODEL", "MANIFEST", "ModelInfo", "export_run", "find_model", "initial_weights", "list_models", "load_network", "model_folders", "read_model_manifest", "sha256_of", "write_model"]


def load_network(info: ModelInfo, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Verify the checksum, then load the weights safely into a fresh network."""
    path = info.weights_path
    if not path.is_file():
        raise ModelError(f"model {info.label}: weights file {path} is missing")
    expected = info.manifest.get("sha256")
    if not expected:
        raise ModelError(f"model {info.label}: the manifest gives no sha256 for {path.name}")
    actual = sha256_of(path)
    if actual != expected:
        raise ModelError(f"model {info.label}: {path.name} is corrupt or was changed (sha256 {actual[:12]}..., manifest says {expected[:12]}...)")
    if list(info.manifest.get("channel_labels", CHANNEL_LABELS)) != list(CHANNEL_LABELS):
        raise ModelError(f"model {info.label}: its output channels do not match this version of SpineAnalysis")
    network = build_network(NetworkConfig.from_dict(info.manifest["network"]))
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
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return ModelInfo(manifest["name"], str(manifest["version"]), folder, manifest)


def export_run(
    run_dir: Path, folder: Path, name: str = DEFAULT_MODEL, version: str = "1.0.0", evaluation: dict | None = None,
    inference: InferenceSettings = InferenceSettings(slice_smoothing_sigma_mm=1.0), earlier_minutes: float = 0.0,
) -> ModelInfo:
    """Turn a training run (``network.pt``, ``split.json``, ``training_config.json``, ``log.jsonl``) into a model folder.

    ``inference`` is stored as the model's way of running (see
    :class:`SpineAnalysisLib.model.predict.InferenceSettings`); ``earlier_minutes`` is the training time
    of the run this one continued from, so the manifest states the whole cost.
    """
    run_dir = Path(run_dir)
    state = torch.load(run_dir / "network.pt", map_location="cpu", weights_only=True)
    config = json.loads((run_dir / "training_config.json").read_text(encoding="utf-8"))
    split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    elapsed = max((r.get("elapsed_s", 0) for r in log), default=0)
    manifest = {
        "name": name,
        "version": version,
        "description": "2D sagittal U-Net (MONAI) predicting vertebral bodies T10-S1 and discs T10-T11..L5-S1 per level; levels made consistent by SpineAnalysisLib.model.labelling",
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
            "config": {k: v for k, v in config.items() if k != "network"},
            "wall_clock_minutes": round(elapsed / 60 + earlier_minutes, 1),
            "hardware": "2-core CPU (no GPU)",
        },
        "inference": inference.validated().to_dict(),
        "validation": (evaluation or {}).get("summary", {}),
    }
    return write_model(Path(folder), state, manifest)
