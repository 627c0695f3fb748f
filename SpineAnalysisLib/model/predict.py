"""Running the network over a volume in the network's frame, slice batch by slice batch."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from monai.inferers import sliding_window_inference

#: In-plane window of the sliding-window inferer (pixels at 1 mm); larger slices are tiled.
WINDOW = (384, 384)


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
) -> tuple[np.ndarray, np.ndarray]:
    """Class map and its probability for a normalised canonical volume (slice, row, column).

    ``output_size``: resample the logits to this (rows, columns) before the argmax (the caller's
    original in-plane grid). ``smoothing_sigma_mm`` with ``slice_spacing_mm``: average the class
    probabilities of neighbouring sagittal slices with a Gaussian of this width (in mm) before the
    argmax, so that a 2D network's slices agree at the lateral edges of a structure; slices further
    apart than twice the width (thick-slice acquisitions) are not mixed. Returns (channel index uint8,
    max probability float16) arrays; memory stays bounded by one batch of probabilities plus the
    few neighbouring slices the smoothing keeps.
    """
    from .preprocessing import resample_slices

    network.eval()
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
            batch = torch.from_numpy(np.ascontiguousarray(volume[start:stop], dtype=np.float32))[:, None].to(device)
            with torch.autocast(device_type=device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16, enabled=amp):
                logits = sliding_window_inference(
                    batch, roi_size=_window_for(batch.shape[-2:]), sw_batch_size=slices_per_batch, predictor=network, overlap=0.25, mode="gaussian"
                )
            probs = torch.softmax(resample_slices(logits.float(), tuple(size)), dim=1)
            buffer = probs if buffer is None or not len(buffer) else torch.cat([buffer, probs])  # no copy without smoothing
            ready = n_slices if stop == n_slices else stop - halo  # slices whose neighbours have all run
            if ready > done:
                smoothed = _smooth_across_slices(buffer, weights, done - buffer_start, ready - buffer_start)
                best, index = smoothed.max(dim=1)
                classes[done:ready] = index.to("cpu", torch.uint8).numpy()
                confidence[done:ready] = best.to("cpu", torch.float16).numpy()
                done = ready
                keep_from = max(0, done - halo)
                buffer, buffer_start = buffer[keep_from - buffer_start :], keep_from
            if progress is not None:
                progress(min(1.0, stop / n_slices))
    return classes, confidence


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
