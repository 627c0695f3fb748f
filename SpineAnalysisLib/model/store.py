"""Shipped and user models: a folder per model with ``manifest.json`` and the weights file.

A manifest names the model, its version, the weights file and its sha256, the network
configuration, the output channels (scheme labels), the expected input and validation metrics.
Loading verifies the checksum first and then reads the weights with ``torch.load(weights_only=True)``
(tensors only, no arbitrary pickle).

Search path, first match wins: ``$SPINEANALYSIS_MODELS`` (folders separated by ``os.pathsep``),
the user model folder (``~/.spineanalysis/models``, where fine-tuned models go), and the shipped
``Resources/Models`` beside the library (in the repository and inside the Slicer extension).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError
from .classes import CHANNEL_LABELS
from .network import NetworkConfig, build_network

DEFAULT_MODEL = "spine-mri-2d"
MANIFEST = "manifest.json"


def model_folders() -> list[Path]:
    folders = [Path(p) for p in os.environ.get("SPINEANALYSIS_MODELS", "").split(os.pathsep) if p]
    folders.append(Path.home() / ".spineanalysis" / "models")
    folders.append(Path(__file__).resolve().parents[2] / "Resources" / "Models")
    return folders


@dataclass
class ModelInfo:
    name: str
    version: str
    folder: Path
    manifest: dict

    @property
    def weights_path(self) -> Path:
        return self.folder / self.manifest["weights"]

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(folder: Path) -> ModelInfo | None:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        return ModelInfo(manifest["name"], str(manifest["version"]), folder, manifest)
    except (OSError, ValueError, KeyError):
        return None


def list_models() -> list[ModelInfo]:
    """Every model found on the search path (each name once, the first found)."""
    found: dict[str, ModelInfo] = {}
    for root in model_folders():
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            info = _read_manifest(folder)
            if info is not None:
                found.setdefault(f"{info.name}@{info.version}", info)
    return list(found.values())


def find_model(name: str | None = None) -> ModelInfo:
    """A model by name (``name`` or ``name@version``), by folder path, or the default one."""
    if name and Path(name).is_dir():
        info = _read_manifest(Path(name))
        if info is None:
            raise ModelError(f"{name}: no readable {MANIFEST} in this model folder")
        return info
    wanted = name or DEFAULT_MODEL
    matches = [m for m in list_models() if wanted in (m.name, f"{m.name}@{m.version}")]
    if not matches:
        available = ", ".join(m.label for m in list_models()) or "none"
        raise ModelError(f"model {wanted!r} not found (available: {available}; search path: {', '.join(map(str, model_folders()))})")
    return sorted(matches, key=lambda m: [int(x) if x.isdigit() else x for x in m.version.split(".")])[-1]


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
    slice_smoothing_sigma_mm: float = 1.0, earlier_minutes: float = 0.0,
) -> ModelInfo:
    """Turn a training run (``network.pt``, ``split.json``, ``training_config.json``, ``log.jsonl``) into a model folder.

    ``slice_smoothing_sigma_mm`` is stored as the model's inference setting (see
    :func:`SpineAnalysisLib.model.predict.predict_volume`); ``earlier_minutes`` is the training time of
    the run this one continued from, so the manifest states the whole cost.
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
        "inference": {"slice_smoothing_sigma_mm": slice_smoothing_sigma_mm},
        "validation": (evaluation or {}).get("summary", {}),
    }
    return write_model(Path(folder), state, manifest)
