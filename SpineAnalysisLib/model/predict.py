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
) -> tuple[np.ndarray, np.ndarray]:
    """Class map and its probability for a normalised canonical volume (slice, row, column).

    ``output_size``: resample the logits to this (rows, columns) before the argmax (the caller's
    original in-plane grid). Returns (channel index uint8, max probability float16) arrays; memory
    stays bounded by one batch of logits.
    """
    from .preprocessing import resample_slices

    network.eval()
    n_slices = volume.shape[0]
    size = output_size or volume.shape[1:]
    classes = np.zeros((n_slices, *size), np.uint8)
    confidence = np.zeros((n_slices, *size), np.float16)
    with torch.inference_mode():
        for start in range(0, n_slices, slices_per_batch):
            if cancel is not None and cancel():
                raise InterruptedError("cancelled")
            batch = torch.from_numpy(np.ascontiguousarray(volume[start : start + slices_per_batch], dtype=np.float32))[:, None].to(device)
            with torch.autocast(device_type=device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16, enabled=amp):
                logits = sliding_window_inference(
                    batch, roi_size=_window_for(batch.shape[-2:]), sw_batch_size=slices_per_batch, predictor=network, overlap=0.25, mode="gaussian"
                )
            logits = resample_slices(logits.float(), tuple(size))
            probs = torch.softmax(logits, dim=1)
            best, index = probs.max(dim=1)
            classes[start : start + len(batch)] = index.to("cpu", torch.uint8).numpy()
            confidence[start : start + len(batch)] = best.to("cpu", torch.float16).numpy()
            if progress is not None:
                progress(min(1.0, (start + len(batch)) / n_slices))
    return classes, confidence


def _window_for(shape: tuple[int, int]) -> tuple[int, int]:
    # the whole slice when it fits (no tiling seams), else WINDOW tiles; multiples of 16
    return tuple(min(w, ((s + 15) // 16) * 16) if s <= w else w for s, w in zip(shape, WINDOW))  # type: ignore[return-value]
