"""Realistic degradations of a real MRI for stress tests: Rician noise, a coil bias field, coarser pixels.

* Rician noise (Gudbjartsson & Patz, "The Rician distribution of noisy MRI data", Magn Reson Med
  34:910-914, 1995): a magnitude image is |signal + complex Gaussian noise|, so each voxel becomes
  sqrt((x + n1)^2 + n2^2) with n1, n2 ~ N(0, sigma). ``snr`` is relative to the image's own signal: the
  mean intensity of its tissue (voxels above Otsu's threshold), sigma = that mean / snr.
* Bias field: a smooth multiplicative field exp(b * u), u a linear ramp from -0.5 (anterior) to +0.5
  (posterior, where a spine surface coil is) plus a quadratic fall-off towards the top and bottom rows;
  ``bias`` = b, so the brightest/darkest ratio of the ramp is e^b.
* Coarser pixels: each sagittal slice is block-averaged by ``factor`` in-plane (sitk.BinShrink, as a
  coarser acquisition matrix averages) and resampled back linearly onto the original grid, so the expert
  labels still apply voxel for voxel.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from SpineAnalysisLib.model.preprocessing import sagittal_frame


def degraded(image: sitk.Image, snr: float | None = None, bias: float = 0.0, factor: int = 1, seed: int = 0) -> sitk.Image:
    """A float32 copy of ``image`` on the same grid with the degradations of the module text applied
    (bias field first, then coarser pixels, then noise, as an acquisition would)."""
    result = sitk.Cast(image, sitk.sitkFloat32)
    frame = sagittal_frame(image)
    array = frame.to_canonical(sitk.GetArrayFromImage(result))
    if bias:
        rows = np.linspace(-1.0, 1.0, array.shape[1])[None, :, None]
        columns = np.linspace(-0.5, 0.5, array.shape[2])[None, None, :]
        array = array * np.exp(bias * columns - 0.5 * bias * rows**2).astype(np.float32)
    if factor > 1:
        array = _coarser(array, factor)
    if snr:
        tissue_threshold = _otsu(array)
        signal = float(array[array > tissue_threshold].mean())
        sigma = signal / float(snr)
        rng = np.random.default_rng(seed)
        array = np.sqrt((array + rng.normal(0.0, sigma, array.shape)) ** 2 + rng.normal(0.0, sigma, array.shape) ** 2)
    out = sitk.GetImageFromArray(frame.from_canonical(array.astype(np.float32)))
    out.CopyInformation(image)
    return out


def _otsu(array: np.ndarray) -> float:
    filter_ = sitk.OtsuThresholdImageFilter()
    filter_.Execute(sitk.GetImageFromArray(array.astype(np.float32)))
    return float(filter_.GetThreshold())


def _coarser(array: np.ndarray, factor: int) -> np.ndarray:
    out = np.empty_like(array, dtype=np.float32)
    for index in range(array.shape[0]):
        slice_ = sitk.GetImageFromArray(array[index].astype(np.float32))
        coarse = sitk.BinShrink(slice_, [factor, factor])
        resampled = sitk.Resample(coarse, slice_, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        out[index] = sitk.GetArrayViewFromImage(resampled)  # the image stays alive while its view is read
    return out
