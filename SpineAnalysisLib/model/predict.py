"""Running the network over a volume in the network's frame, slice batch by slice batch.

How a model's probabilities become classes is part of the model (``inference`` in its manifest, read
by :class:`InferenceSettings`): averaging neighbouring thin slices, multi-scale test-time
augmentation and the probability a voxel needs to be called vertebral body.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from .classes import VERTEBRA_CHANNELS
from .network import gather_slices, input_config, input_slice_offsets
from .preprocessing import resample_slices

#: In-plane window of the sliding-window inferer (pixels at 1 mm); larger slices are tiled.
WINDOW = (384, 384)


@dataclass(frozen=True)
class InferenceSettings:
    """A model's rules for turning network outputs into classes (its manifest's ``inference``).

    ``slice_smoothing_sigma_mm``: Gaussian width (mm) over neighbouring sagittal slices (0: off).
    ``test_time_scales``: in-plane zoom factors the network is also run at; their class probabilities
    are averaged (multi-scale test-time augmentation, as in Isensee et al., nnU-Net, Nat Methods 2021,
    who average mirrored copies; a sagittal slice is not symmetric top-bottom or front-back, so zooms are used).
    ``test_time_mirror``: also run the network on the left-right mirrored volume (each slice with its
    neighbours in reverse order; the spine is close to symmetric about the mid-sagittal plane) and
    average the probabilities of both, doubling the network's work.
    ``body_probability_threshold``: a voxel is vertebral body when the summed probability of all
    body levels exceeds it, then takes the most probable level; other voxels take the most probable
    other class. 0 keeps the plain argmax over all channels.
    """

    slice_smoothing_sigma_mm: float = 0.0
    test_time_scales: tuple[float, ...] = (1.0,)
    body_probability_threshold: float = 0.0
    test_time_mirror: bool = False

    @classmethod
    def from_manifest(cls, manifest: dict) -> "InferenceSettings":
        """The settings a manifest gives (older manifests: the plain ones); ValueError names a bad value."""
        section = manifest.get("inference", {}) or {}
        try:
            settings = cls(
                slice_smoothing_sigma_mm=float(section.get("slice_smoothing_sigma_mm", 0.0)),
                test_time_scales=tuple(float(s) for s in section.get("test_time_scales", (1.0,))),
                body_probability_threshold=float(section.get("body_probability_threshold", 0.0)),
                test_time_mirror=_true_or_false("test_time_mirror", section.get("test_time_mirror", False)),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"unreadable inference settings {section!r} ({error})") from None
        return settings.validated()

    def to_dict(self) -> dict:
        return {**asdict(self), "test_time_scales": list(self.test_time_scales)}

    def validated(self) -> "InferenceSettings":
        if self.slice_smoothing_sigma_mm < 0:
            raise ValueError(f"slice smoothing must be >= 0 mm, got {self.slice_smoothing_sigma_mm}")
        if not self.test_time_scales or any(not 0.5 <= s <= 2.0 for s in self.test_time_scales):
            raise ValueError(f"test-time scales must be between 0.5 and 2, got {list(self.test_time_scales)}")
        if not 0.0 <= self.body_probability_threshold < 1.0:
            raise ValueError(f"the body probability threshold must be in [0, 1), got {self.body_probability_threshold}")
        return self


def _true_or_false(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def predict_volume(
    network: torch.nn.Module,
    volume: np.ndarray,
    device: torch.device,
    slices_per_batch: int = 16,
    output_size: tuple[int, int] | None = None,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    amp: bool = False,
    slice_spacing_mm: float | None = None,
    smoothing_sigma_mm: float = 0.0,
    test_time_scales: tuple[float, ...] = (1.0,),
    body_probability_threshold: float = 0.0,
    test_time_mirror: bool = False,
    edge_pads: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """Class map and its probability for a normalised canonical volume (slice, row, column).

    ``output_size``: resample the logits to this (rows, columns) before the argmax (the caller's
    original in-plane grid). ``smoothing_sigma_mm`` with ``slice_spacing_mm``: average the class
    probabilities of neighbouring sagittal slices with a Gaussian of this width (in mm) before the
    argmax, so that a 2D network's slices agree at the lateral edges of a structure; slices further
    apart than twice the width (thick-slice acquisitions) are not mixed. A 2.5D network (built by
    :func:`~.network.build_network` with more than one input channel) is fed each slice with its
    neighbours, chosen for ``slice_spacing_mm`` by :func:`~.network.input_slice_offsets`;
    ``test_time_mirror`` also feeds them in reverse order (the left-right mirror image) and averages.
    ``edge_pads`` (top, bottom, front, back; pixels of ``volume``): mirror the slices outwards by that
    much before the network and drop it from its output, so that structures reaching the image edge
    are labelled up to it (the network's own zero padding leaves the outer millimetres unlabelled). Returns (channel index uint8,
    max probability float16) arrays; memory stays bounded by one batch of probabilities plus the
    few neighbouring slices the smoothing keeps.
    """
    network.eval()
    offsets = input_slice_offsets(input_config(network), slice_spacing_mm)
    n_slices = volume.shape[0]
    size = output_size or volume.shape[1:]
    weights = slice_smoothing_weights(slice_spacing_mm, smoothing_sigma_mm)
    halo = len(weights) // 2
    classes = np.zeros((n_slices, *size), np.uint8)
    confidence = np.zeros((n_slices, *size), np.float16)
    # probabilities of slices [buffer_start, stop) not yet needed by every neighbour: each slice runs once
    buffer: torch.Tensor | None = None
    buffer_start = done = 0
    with torch.inference_mode():
        for start in range(0, n_slices, slices_per_batch):
            if cancel is not None and cancel():
                raise InterruptedError("cancelled")
            stop = min(n_slices, start + slices_per_batch)
            inputs = gather_slices(volume, np.arange(start, stop), offsets)
            batch = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(device)
            probs = _scale_averaged_probabilities(network, batch, tuple(size), test_time_scales, slices_per_batch, amp, test_time_mirror, edge_pads)
            buffer = probs if buffer is None or not len(buffer) else torch.cat([buffer, probs])  # no copy without smoothing
            ready = n_slices if stop == n_slices else stop - halo  # slices whose neighbours have all run
            if ready > done:
                smoothed = _smooth_across_slices(buffer, weights, done - buffer_start, ready - buffer_start)
                best, index = decide_classes(smoothed, body_probability_threshold)
                classes[done:ready] = index.to("cpu", torch.uint8).numpy()
                confidence[done:ready] = best.to("cpu", torch.float16).numpy()
                done = ready
                keep_from = max(0, done - halo)
                buffer, buffer_start = buffer[keep_from - buffer_start :], keep_from
            if progress is not None:
                progress(min(1.0, stop / n_slices))
    return classes, confidence


def _scale_averaged_probabilities(
    network: torch.nn.Module, batch: torch.Tensor, size: tuple[int, int], scales: tuple[float, ...], slices_per_batch: int, amp: bool,
    mirror: bool = False, edge_pads: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> torch.Tensor:
    """Class probabilities on ``size`` pixels, averaged over the network run at each in-plane zoom
    (and, with ``mirror``, on each zoom of the left-right mirror: the input channels in reverse order);
    ``edge_pads``: see :func:`predict_volume`."""
    total: torch.Tensor | None = None
    inner_height, inner_width = batch.shape[-2:]
    top, bottom, front, back = (min(p, n - 1) for p, n in zip(edge_pads, (inner_height, inner_height, inner_width, inner_width)))
    padded = bool(top or bottom or front or back)
    if padded:
        batch = F.pad(batch, (front, back, top, bottom), mode="reflect")
    height, width = batch.shape[-2:]
    views = (batch, batch.flip(1)) if mirror else (batch,)
    for view, scale in itertools.product(views, scales):
        zoomed = view if scale == 1.0 else resample_slices(view, (max(16, round(height * scale)), max(16, round(width * scale))))
        with torch.autocast(device_type=batch.device.type, dtype=torch.float16 if batch.device.type == "cuda" else torch.bfloat16, enabled=amp):
            logits = sliding_window_inference(
                zoomed, roi_size=_window_for(zoomed.shape[-2:]), sw_batch_size=slices_per_batch, predictor=network, overlap=0.25, mode="gaussian"
            )
        logits = logits.float()
        if padded:
            logits = resample_slices(logits, (height, width))[..., top : top + inner_height, front : front + inner_width]
        probs = torch.softmax(resample_slices(logits, size), dim=1)
        total = probs if total is None else total.add_(probs)
    if total is None:
        raise ValueError("at least one test-time scale is needed")
    runs = len(views) * len(scales)
    return total / runs if runs > 1 else total


def coarse_structures(network: torch.nn.Module, inputs: np.ndarray, device: torch.device, output_size: tuple[int, int],
                      slices_per_batch: int = 8, amp: bool = False) -> np.ndarray:
    """Body-or-disc booleans (N, *output_size) of the coarse pass: the network once (one zoom, plain
    argmax) on ``inputs`` (N, input channels, rows, columns; normalised, 1 mm pixels)."""
    network.eval()
    found = np.zeros((len(inputs), *output_size), bool)
    with torch.inference_mode():
        for start in range(0, len(inputs), slices_per_batch):
            batch = torch.from_numpy(np.ascontiguousarray(inputs[start : start + slices_per_batch], dtype=np.float32)).to(device)
            probs = _scale_averaged_probabilities(network, batch, tuple(output_size), (1.0,), slices_per_batch, amp)
            found[start : start + len(batch)] = (probs.argmax(dim=1) > 0).cpu().numpy()
    return found


def decide_classes(probs: torch.Tensor, body_probability_threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(probability, channel index) per voxel of probabilities (N, C, H, W).

    With a threshold, a voxel is vertebral body when the summed probability of all body channels
    exceeds it (then its most probable body level), otherwise its most probable non-body channel.
    """
    if not body_probability_threshold:
        return probs.max(dim=1)
    body = torch.zeros(probs.shape[1], dtype=torch.bool, device=probs.device)
    body[list(VERTEBRA_CHANNELS)] = True
    best_body, body_index = probs.masked_fill(~body[None, :, None, None], -1.0).max(dim=1)
    best_other, other_index = probs.masked_fill(body[None, :, None, None], -1.0).max(dim=1)
    is_body = probs[:, body].sum(dim=1) > body_probability_threshold
    return torch.where(is_body, best_body, best_other), torch.where(is_body, body_index, other_index)


def slice_smoothing_weights(slice_spacing_mm: float | None, sigma_mm: float) -> np.ndarray:
    """Gaussian weights over slice offsets -r..r (r = the slices within 2 sigma); [1] when none are."""
    if not slice_spacing_mm or sigma_mm <= 0:
        return np.ones(1)
    radius = int(np.floor(2 * sigma_mm / slice_spacing_mm))
    offsets = np.arange(-radius, radius + 1) * slice_spacing_mm
    return np.exp(-0.5 * (offsets / sigma_mm) ** 2)


def _smooth_across_slices(probs: torch.Tensor, weights: np.ndarray, first: int, stop: int) -> torch.Tensor:
    """Weighted mean of probs[i + d] over offsets d for i in [first, stop); edges use the slices present."""
    halo = len(weights) // 2
    if halo == 0:
        return probs[first:stop]
    total = torch.zeros_like(probs[first:stop])
    norm = torch.zeros(stop - first, dtype=probs.dtype, device=probs.device)
    for k, weight in enumerate(weights):
        offset = k - halo
        lo, hi = max(first + offset, 0), min(stop + offset, len(probs))
        if lo >= hi:
            continue
        target = slice(lo - offset - first, hi - offset - first)
        total[target] += float(weight) * probs[lo:hi]
        norm[target] += float(weight)
    return total / norm[:, None, None, None]


def _window_for(shape: tuple[int, int]) -> tuple[int, int]:
    # the whole slice when it fits (no tiling seams), else WINDOW tiles; multiples of 16
    return tuple(min(w, ((s + 15) // 16) * 16) if s <= w else w for s, w in zip(shape, WINDOW))  # type: ignore[return-value]
