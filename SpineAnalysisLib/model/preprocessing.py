"""Bringing any 3D image into the network's frame: sagittal slices, superior at the top, anterior left.

The frame only permutes and flips the voxel array (no interpolation across slices), so thick-slice
sagittal acquisitions keep their slices. Within each slice the image is resampled to
``TARGET_SPACING_MM`` (the training data are 1 mm). Images acquired axially or coronally are
reformatted the same way: their sagittal slices then have the through-plane resolution of the
acquisition along one in-plane axis, which is allowed but reported (see :func:`frame_warnings`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

TARGET_SPACING_MM = 1.0


@dataclass(frozen=True)
class SagittalFrame:
    """How a numpy array (z, y, x) of an image maps to (slice L->R... , row S->I, column A->P)."""

    axes: tuple[int, int, int]  # numpy axes that become (slice, row, column)
    flips: tuple[bool, bool, bool]  # flip each of them after transposing
    spacing: tuple[float, float, float]  # mm along (slice, row, column)
    shape: tuple[int, int, int]  # canonical shape before in-plane resampling
    obliqueness_deg: float  # largest angle between a voxel axis and its patient axis

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        result = np.transpose(array, self.axes)
        for axis, flip in enumerate(self.flips):
            if flip:
                result = np.flip(result, axis)
        return np.ascontiguousarray(result)

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        result = array
        for axis, flip in enumerate(self.flips):
            if flip:
                result = np.flip(result, axis)
        return np.ascontiguousarray(np.transpose(result, np.argsort(self.axes)))

    def resampled_shape(self, spacing_mm: float = TARGET_SPACING_MM, in_plane: tuple[int, int] | None = None) -> tuple[int, int]:
        """In-plane size at ``spacing_mm`` pixels of the frame's slices, or of ``in_plane`` pixels (rows, columns) cut from them."""
        in_plane = self.shape[1:] if in_plane is None else in_plane
        return tuple(max(1, int(round(n * s / spacing_mm))) for n, s in zip(in_plane, self.spacing[1:]))  # type: ignore[return-value]


def sagittal_frame(image: sitk.Image) -> SagittalFrame:
    """Find which voxel axes run left-right, superior-inferior and anterior-posterior."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)  # columns: index axes i, j, k in LPS
    # numpy axis a is ITK index axis 2 - a
    columns = [direction[:, 2 - a] for a in range(3)]
    best = None
    for order in itertools.permutations(range(3)):
        # order[p] = numpy axis playing patient axis p (0: L-R, 1: S-I, 2: A-P)
        patient_component = (0, 2, 1)  # LPS index of the L-R, S-I and A-P axes
        score = sum(abs(columns[order[p]][patient_component[p]]) for p in range(3))
        if best is None or score > best[0]:
            best = (score, order)
    order = best[1]
    slice_axis, row_axis, col_axis = order
    flips = (
        columns[slice_axis][0] < 0,  # slices run right -> left (LPS x grows to the left)
        columns[row_axis][2] > 0,  # rows run superior -> inferior (LPS z grows superiorly)
        columns[col_axis][1] < 0,  # columns run anterior -> posterior (LPS y grows posteriorly)
    )
    spacing_itk = image.GetSpacing()
    spacing = tuple(float(spacing_itk[2 - a]) for a in order)
    shape_numpy = image.GetSize()[::-1]
    shape = tuple(int(shape_numpy[a]) for a in order)
    cosines = [abs(columns[order[p]][(0, 2, 1)[p]]) for p in range(3)]
    oblique = float(np.degrees(np.arccos(np.clip(min(cosines), -1, 1))))
    return SagittalFrame(tuple(order), flips, spacing, shape, oblique)  # type: ignore[arg-type]


def frame_warnings(frame: SagittalFrame) -> list[str]:
    messages = []
    if frame.spacing[1] > 2.5 or frame.spacing[2] > 2.5:
        messages.append(
            f"the sagittal plane has {frame.spacing[1]:.1f} x {frame.spacing[2]:.1f} mm pixels (an axial or coronal "
            "acquisition?); it was reformatted to sagittal and resampled to 1 mm, expect coarser edges"
        )
    if frame.obliqueness_deg > 30:
        messages.append(f"the slices are {frame.obliqueness_deg:.0f} degrees oblique to the patient's sagittal plane")
    return messages


def normalise_intensity(volume: np.ndarray, low_percentile: float = 0.5, high_percentile: float = 99.5) -> np.ndarray:
    """Map intensities to about [0, 1] by robust percentiles; NaN/inf become the lowest value.

    Returns float32. A constant volume becomes all zeros.
    """
    volume = np.asarray(volume, dtype=np.float32)
    finite = np.isfinite(volume)
    if not finite.all():
        volume = np.where(finite, volume, np.nan)
    sample = volume[finite]
    if sample.size > 2_000_000:
        sample = sample[:: sample.size // 2_000_000 + 1]
    if sample.size == 0:
        return np.zeros(volume.shape, np.float32)
    low, high = np.percentile(sample, [low_percentile, high_percentile])
    if not high > low:
        return np.zeros(volume.shape, np.float32)
    result = (np.nan_to_num(volume, nan=low) - low) / (high - low)
    return np.clip(result, 0.0, 1.0).astype(np.float32)


def resample_slices(slices: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resample a batch (N, C, H, W) to ``size`` (pixel centres aligned as in ITK, align_corners=False)."""
    if tuple(slices.shape[-2:]) == tuple(size):
        return slices
    if mode == "nearest":
        return F.interpolate(slices, size=size, mode="nearest-exact")
    return F.interpolate(slices, size=size, mode=mode, align_corners=False)


def pad_to_multiple(batch: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad H and W (bottom/right) up to a multiple; returns the padded batch and the original size."""
    height, width = batch.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h or pad_w:
        batch = F.pad(batch, (0, pad_w, 0, pad_h))
    return batch, (height, width)
