"""Finding models without torch: the search path, the manifests and the weights checksum.

A model is a folder with ``manifest.json`` and the weights file. Search path, first match wins:
``$SPINEANALYSIS_MODELS`` (folders separated by ``os.pathsep``), the user model folder
(``~/.spineanalysis/models``, where fine-tuned models go), and the shipped ``Resources/Models``
(:func:`SpineAnalysisLib.shipped.models_folder`: inside an installed wheel, else beside the library in
the repository and in the Slicer extension). The Slicer module lists
models from here before torch is installed; :mod:`.store` loads them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from ..shipped import models_folder

DEFAULT_MODEL = "spine-mri-2d"
MANIFEST = "manifest.json"


def model_folders() -> list[Path]:
    folders = [Path(p) for p in os.environ.get("SPINEANALYSIS_MODELS", "").split(os.pathsep) if p]
    folders.append(Path.home() / ".spineanalysis" / "models")
    folders.append(models_folder())
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


def read_model_manifest(folder: Path) -> ModelInfo | None:
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
            info = read_model_manifest(folder)
            if info is not None:
                found.setdefault(f"{info.name}@{info.version}", info)
    return list(found.values())


def find_model(name: str | None = None) -> ModelInfo:
    """A model by name (``name`` or ``name@version``), by folder path, or the default one."""
    if name and Path(name).is_dir():
        info = read_model_manifest(Path(name))
        if info is None:
            raise ModelError(f"{name}: no readable {MANIFEST} in this model folder")
        return info
    wanted = name or DEFAULT_MODEL
    matches = [m for m in list_models() if wanted in (m.name, f"{m.name}@{m.version}")]
    if not matches:
        available = ", ".join(m.label for m in list_models()) or "none"
        raise ModelError(f"model {wanted!r} not found (available: {available}; search path: {', '.join(map(str, model_folders()))})")
    return sorted(matches, key=lambda m: [int(x) if x.isdigit() else x for x in m.version.split(".")])[-1]
