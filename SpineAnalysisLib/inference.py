"""Segmenting and labelling a spine MRI: ``segment_image`` is what the CLI, Slicer and batch call."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

from .errors import InputError, ModelError
from .imageio import label_map_like
from .modality import looks_like_ct
from .model.labelling import LabellingReport, label_levels
from .model.predict import InferenceSettings, predict_volume
from .model.preprocessing import TARGET_SPACING_MM, frame_warnings, normalise_intensity, resample_slices, sagittal_frame
from .model.store import ModelInfo, find_model, load_network
from .model.classes import CHANNEL_LABELS

ProgressCallback = Callable[[float, str], None]


@dataclass
class SegmentationResult:
    label_map: sitk.Image
    report: LabellingReport
    model: str
    device: str
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"model": self.model, "device": self.device, "seconds": round(self.seconds, 2), "warnings": self.warnings, **self.report.to_dict()}


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` takes CUDA, then Apple MPS, then the CPU; ``cuda`` without a GPU is an error."""
    requested = (requested or "auto").lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda was asked for but no CUDA GPU is available (use --device auto or cpu)")
        return torch.device("cuda")
    if requested == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise InputError("--device mps was asked for but Apple MPS is not available")
        return torch.device("mps")
    if requested == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device {requested!r} (use auto, cpu, cuda or mps)")


_NETWORK_CACHE: dict[tuple[str, str], torch.nn.Module] = {}


def get_network(info: ModelInfo, device: torch.device) -> torch.nn.Module:
    """Load a network once per (model, device) and reuse it (batch runs segment many cases)."""
    key = (str(info.weights_path), str(device))
    if key not in _NETWORK_CACHE:
        _NETWORK_CACHE[key] = load_network(info, device)
    return _NETWORK_CACHE[key]


def inference_settings(info: ModelInfo, fast: bool = False) -> InferenceSettings:
    """How ``info`` turns network outputs into classes; ``fast``: one pass per slice (no zooms, no mirror)."""
    try:
        settings = InferenceSettings.from_manifest(info.manifest)
    except ValueError as error:
        raise ModelError(f"model {info.label}: its manifest's inference settings are invalid: {error}") from None
    if fast:
        settings = dataclasses.replace(settings, test_time_scales=(1.0,), test_time_mirror=False)
    return settings


def segment_image(
    image: sitk.Image,
    model_name: str | None = None,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    threads: int | None = None,
    fast: bool = False,
) -> SegmentationResult:
    """Label vertebral bodies and discs of a spine MRI; the label map is on exactly the image's grid.

    ``fast``: run the network once per slice, leaving out the model's test-time zooms and mirror
    (several times faster on a CPU, for cohorts; the model card gives the accuracy of both).
    """
    started = time.time()
    report_progress = progress or (lambda fraction, message: None)
    if image.GetDimension() != 3:
        raise InputError(f"a 3D volume is needed, got a {image.GetDimension()}D image")
    array = sitk.GetArrayFromImage(image)
    if min(array.shape) < 2 and sorted(array.shape)[1] < 2:
        raise InputError(f"image of size {image.GetSize()} is not a volume")
    warnings: list[str] = []
    if looks_like_ct(image, array.astype(np.float32, copy=False)):
        raise InputError(
            "this looks like a CT volume (Hounsfield units); the shipped model segments MRI only, a CT model does not exist yet: "
            "segment it with another tool (e.g. TotalSegmentator) and measure that: spineanalysis measure CT LABELS -o OUTDIR --label-scheme auto"
        )
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        warnings.append(f"{int((~np.isfinite(array)).sum())} NaN/infinite voxels were treated as the darkest intensity")

    torch_device = pick_device(device)
    if threads:
        torch.set_num_threads(threads)
    info = find_model(model_name)
    report_progress(0.02, f"loading model {info.label} on {torch_device.type}")
    network = get_network(info, torch_device)

    frame = sagittal_frame(image)
    warnings.extend(frame_warnings(frame))
    canonical = normalise_intensity(frame.to_canonical(array))
    working_size = frame.resampled_shape(TARGET_SPACING_MM)
    volume = resample_slices(torch.from_numpy(canonical)[:, None], working_size)[:, 0].numpy()
    del canonical
    report_progress(0.05, f"segmenting {volume.shape[0]} sagittal slices")

    slices_per_batch = 32 if torch_device.type == "cuda" else 8
    settings = inference_settings(info, fast)
    classes, _ = predict_volume(
        network,
        volume,
        torch_device,
        slices_per_batch=slices_per_batch,
        output_size=frame.shape[1:],
        progress=lambda f: report_progress(0.05 + 0.85 * f, "segmenting"),
        cancel=cancel,
        amp=torch_device.type == "cuda",
        slice_spacing_mm=frame.spacing[0],
        smoothing_sigma_mm=settings.slice_smoothing_sigma_mm,
        test_time_scales=settings.test_time_scales,
        body_probability_threshold=settings.body_probability_threshold,
        test_time_mirror=settings.test_time_mirror,
    )
    report_progress(0.92, "naming levels")
    labels_canonical, report = label_levels(classes, frame.spacing)
    label_map = label_map_like(frame.from_canonical(labels_canonical), image)
    report_progress(1.0, "done")
    return SegmentationResult(label_map, report, info.label, torch_device.type, time.time() - started, warnings)
