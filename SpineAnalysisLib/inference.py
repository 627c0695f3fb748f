"""Segmenting and labelling a spine MRI: ``segment_image`` is what the CLI, Slicer and batch call."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

from . import labels as scheme
from .errors import InputError, ModelError
from .imageio import label_map_like
from .modality import looks_like_ct
from .model import chain
from .model import repair as repair_rules
from .model.labelling import LabellingReport, label_levels
from .model.localise import SpineBox, box_from_coarse, coarse_slices, edge_padding
from .model.network import input_config, input_slice_offsets
from .model.predict import InferenceSettings, coarse_structures, predict_volume
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
    #: seconds per stage (prepare, localise, segment, label) and the share of the volume segmented
    stages: dict[str, float] = field(default_factory=dict)
    #: the first pass, when a repair pass replaced it (``report.repair`` says why)
    first_pass: "PassResult | None" = None
    #: the image's estimated noise (:func:`.model.repair.noise_level`: ``sigma``, ``snr``); None without repair
    noise: "dict | None" = None

    def summary(self) -> dict:
        stages = {name: round(value, 3 if name == "box_fraction" else 2) for name, value in self.stages.items()}
        return {"model": self.model, "device": self.device, "seconds": round(self.seconds, 2), "stages": stages, "warnings": self.warnings,
                "noise": self.noise, **self.report.to_dict()}


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


def network_loaded(info: ModelInfo, device: torch.device) -> bool:
    """Whether :func:`get_network` holds this model on this device already."""
    return (str(info.weights_path), str(device)) in _NETWORK_CACHE


def forget_networks(model_folder) -> None:
    """Drop the cached networks of the model in ``model_folder`` (a temporary folder that is not used again)."""
    folder = Path(model_folder).resolve()
    for key in [k for k in _NETWORK_CACHE if Path(k[0]).parent.resolve() == folder]:
        del _NETWORK_CACHE[key]


#: ``--fast`` (one zoom instead of the model's three) gave clinically different answers from the
#: default on the bundled sample (L4 slip -8.8 % against -14.6 %, levels anchored on L1 instead of S1;
#: issue 25 item 7). Localising the spine first made the default about as fast on a CPU, so ``fast``
#: is still accepted but runs the default settings, with this warning.
FAST_DEPRECATED = ("--fast is deprecated and runs the default settings: one zoom instead of three changed clinical answers "
                   "(slip, level anchor); localising the spine first now makes the default about as fast")


def inference_settings(info: ModelInfo, fast: bool = False) -> InferenceSettings:
    """How ``info`` turns network outputs into classes; ``fast`` is deprecated and changes nothing
    (:data:`FAST_DEPRECATED`)."""
    try:
        return InferenceSettings.from_manifest(info.manifest)
    except ValueError as error:
        raise ModelError(f"model {info.label}: its manifest's inference settings are invalid: {error}") from None


def segment_image(
    image: sitk.Image,
    model_name: str | None = None,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    threads: int | None = None,
    fast: bool = False,
    repair: bool = True,
) -> SegmentationResult:
    """Label vertebral bodies and discs of a spine MRI; the label map is on exactly the image's grid.

    The network first runs on a few slices to find the spine (:mod:`.model.localise`), then on the
    slab and box that hold it, mirrored at the image's top edge. ``fast`` is deprecated: it runs the
    default settings and adds :data:`FAST_DEPRECATED` to the warnings.

    ``repair``: when the first pass's levels are uncertain or the image is noisy
    (:func:`.model.repair.repair_reasons`), segment again after edge-preserving denoising and keep
    that pass only when it is better (:func:`.model.repair.choose`); ``report.repair`` says what was
    tried and which pass was kept.
    """
    started = time.time()
    report_progress = progress or (lambda fraction, message: None)
    if image.GetDimension() != 3:
        raise InputError(f"a 3D volume is needed, got a {image.GetDimension()}D image")
    array = sitk.GetArrayFromImage(image)
    if min(array.shape) < 2 and sorted(array.shape)[1] < 2:
        raise InputError(f"image of size {image.GetSize()} is not a volume")
    warnings: list[str] = [FAST_DEPRECATED] if fast else []
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
    clock = time.perf_counter()
    canonical_raw = frame.to_canonical(array)
    del array
    canonical = normalise_intensity(canonical_raw)
    noise = repair_rules.noise_level(canonical) if repair else None  # part of preparing (0.1-0.3 s)
    prepare_s = time.perf_counter() - clock
    run = _PassRunner(network, frame, torch_device, inference_settings(info), report_progress, cancel)
    first = run(canonical, "", (0.04, 0.88))
    first.stages = {"prepare_s": prepare_s, **first.stages}
    chosen, attempt = first, None
    if noise is not None:
        warnings.extend(repair_rules.noise_warnings(noise))
        reasons = repair_rules.repair_reasons(first.report, noise)
        if reasons:
            report_progress(0.92, "repair: segmenting again after edge-preserving denoising (" + "; ".join(reasons) + ")")
            clock = time.perf_counter()
            denoised = normalise_intensity(repair_rules.denoise(canonical_raw, frame.spacing))
            denoise_s = time.perf_counter() - clock
            second = run(denoised, "second pass: ", (0.92, 0.07))
            second.stages["denoise_s"] = denoise_s
            del denoised
            chosen, attempt = repair_rules.choose(first, second, reasons, noise, frame.spacing)
            chosen.report.repair = attempt
    del canonical_raw, canonical
    label_map = label_map_like(frame.from_canonical(chosen.labels), image)
    stages = dict(first.stages)
    if attempt is not None:
        stages.update({f"repair_{k}": v for k, v in second.stages.items()})
    report_progress(1.0, "done")
    return SegmentationResult(label_map, chosen.report, info.label, torch_device.type, time.time() - started, warnings, stages,
                              first_pass=None if chosen is first else first, noise=noise)


@dataclass
class PassResult:
    """One segmentation pass in the network frame: its label map, labelling report and stage times."""

    labels: np.ndarray
    report: LabellingReport
    stages: dict[str, float]

    def label_map_on(self, image: sitk.Image) -> sitk.Image:
        """This pass's labels on the grid of ``image``, the image it segmented (made on request: only the
        evaluation scores a first pass that a repair pass replaced)."""
        return label_map_like(sagittal_frame(image).from_canonical(self.labels), image)


class _PassRunner:
    """Localise, segment and label one normalised canonical volume (a pass)."""

    def __init__(self, network, frame, device: torch.device, settings: InferenceSettings, progress: ProgressCallback, cancel):
        self.network, self.frame, self.device, self.settings = network, frame, device, settings
        self.progress, self.cancel = progress, cancel
        self.slices_per_batch = 32 if device.type == "cuda" else 8
        self.amp = device.type == "cuda"

    def __call__(self, canonical: np.ndarray, name: str, span: tuple[float, float]) -> PassResult:
        """``name`` prefixes the progress messages; ``span``: (start, width) of this pass in the overall progress fraction."""
        frame, stages = self.frame, {}
        start, width = span
        progress = lambda fraction, message: self.progress(start + width * fraction, message)  # noqa: E731
        clock = time.perf_counter()
        progress(0.0, f"{name}finding the spine")
        box = _locate_spine(self.network, canonical, frame, self.device, self.slices_per_batch, self.amp)
        stages["localise_s"] = time.perf_counter() - clock
        settings = self.settings
        searched = box is None
        if searched:  # the coarse pass found no spine: search the whole volume, at one zoom to bound the time
            box = SpineBox.whole(frame.shape)
            settings = replace(settings, test_time_scales=(1.0,))
        stages["zooms"] = len(settings.test_time_scales)
        clock = time.perf_counter()
        part = canonical[box.index()]
        working_size = frame.resampled_shape(TARGET_SPACING_MM, part.shape[1:])
        volume = resample_slices(torch.from_numpy(np.ascontiguousarray(part))[:, None], working_size)[:, 0].numpy()
        progress(0.07, f"{name}segmenting {volume.shape[0]} sagittal slices")
        box_classes, _ = predict_volume(
            self.network,
            volume,
            self.device,
            slices_per_batch=self.slices_per_batch,
            output_size=(box.row_stop - box.row_start, box.column_stop - box.column_start),
            progress=lambda f: progress(0.07 + 0.9 * f, f"{name}segmenting"),
            cancel=self.cancel,
            amp=self.amp,
            slice_spacing_mm=frame.spacing[0],
            smoothing_sigma_mm=settings.slice_smoothing_sigma_mm,
            test_time_scales=settings.test_time_scales,
            body_probability_threshold=settings.body_probability_threshold,
            test_time_mirror=settings.test_time_mirror,
            edge_pads=edge_padding(box, frame.shape, TARGET_SPACING_MM),
        )
        del volume, part
        classes = np.zeros(frame.shape, np.uint8)
        classes[box.index()] = box_classes
        stages["segment_s"] = time.perf_counter() - clock
        progress(0.98, f"{name}naming levels")
        clock = time.perf_counter()
        labels_canonical, report = label_levels(classes, frame.spacing)
        report.mark_uncertain(chain.featureless_reasons(_intensity_spreads(canonical, labels_canonical)))
        if searched and report.levels:
            report.flags.append(WHOLE_VOLUME_SEARCH)
        stages["label_s"] = time.perf_counter() - clock
        stages["box_fraction"] = box.fraction_of(frame.shape)
        return PassResult(labels_canonical, report, stages)


def _intensity_spreads(canonical: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Interquartile range of the normalised image inside each labelled vertebral body, by name."""
    flat_labels, flat_image = labels.ravel(), canonical.ravel()
    inside = np.flatnonzero(flat_labels)
    spreads = {}
    for label in np.unique(flat_labels[inside]):
        if scheme.is_vertebra(int(label)):
            quartiles = np.percentile(flat_image[inside[flat_labels[inside] == label]], [25, 75])
            spreads[scheme.vertebra_name(int(label))] = float(quartiles[1] - quartiles[0])
    return spreads


#: flag of a pass whose coarse pass found no spine (the whole volume was then searched at one zoom)
WHOLE_VOLUME_SEARCH = ("the quick search found no spine, so the whole volume was segmented at one zoom instead of three: "
                       "outlines may be less exact; check them on the image")


def _locate_spine(network, canonical: np.ndarray, frame, device: torch.device, slices_per_batch: int, amp: bool) -> SpineBox | None:
    """The slab and in-plane box holding the spine (:mod:`.model.localise`); None when the coarse pass finds
    nothing (the caller then searches the whole volume at one zoom: on a 381 x 381 x 77 grid three zooms over the
    whole volume take about 39 s on two cores, over the 20 s a case may take; this happens only on scans the
    network cannot read, such as a Siegen scan at simulated SNR 8, never on the 66 shared scans)."""
    sampled = coarse_slices(canonical.shape[0], frame.spacing[0])
    rows = np.clip(sampled[:, None] + np.asarray(input_slice_offsets(input_config(network), frame.spacing[0]))[None, :], 0, canonical.shape[0] - 1)
    needed, where = np.unique(rows, return_inverse=True)  # resample each needed slice once
    working = resample_slices(torch.from_numpy(canonical[needed])[:, None], frame.resampled_shape(TARGET_SPACING_MM))[:, 0].numpy()
    found = coarse_structures(network, working[where.reshape(rows.shape)], device, frame.shape[1:], slices_per_batch, amp)
    return box_from_coarse(found, sampled, frame.shape, frame.spacing)
