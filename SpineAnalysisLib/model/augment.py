"""Training augmentation for 2D sagittal slices, aimed at scans unlike the training set.

Geometry: rotation, anisotropic scaling and field-of-view crops (a random window of the slice).
Resolution: loss of in-plane resolution (down- then up-sampling) as in thick or coarse acquisitions.
Contrast: MONAI's bias field, gamma, random piecewise-linear intensity remapping (a SynthSeg-like
change of contrast: T1, T2, STIR and Dixon differ by more than a gamma), inversion, noise and blur.
Noise: optionally Rician noise at a random signal-to-noise ratio (:func:`rician_noise`), as in a magnitude
image of a noisier acquisition; the Gaussian noise of the contrast transforms stays as it was.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from monai import transforms as mt


def intensity_transform() -> mt.Compose:
    return mt.Compose(
        [
            mt.RandBiasField(degree=3, coeff_range=(0.0, 0.35), prob=0.5),
            mt.RandAdjustContrast(prob=0.5, gamma=(0.55, 1.8)),
            mt.RandHistogramShift(num_control_points=(4, 10), prob=0.35),
            mt.RandGaussianSmooth(sigma_x=(0.3, 1.2), sigma_y=(0.3, 1.2), prob=0.2),
            mt.RandGaussianNoise(prob=0.5, mean=0.0, std=0.06),
            mt.ScaleIntensityRangePercentiles(lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True),
        ]
    )


#: Signal-to-noise ratios of :func:`rician_noise` in training, drawn log-uniformly (2: barely readable,
#: 20: a clean scan). Fixed before any run; the noise stress test (Testing/Benchmarks/stress_noise.py)
#: degrades scans to SNR 8, 4 and 2 with the same definition.
RICIAN_SNR_RANGE = (2.0, 20.0)


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold (IEEE Trans Syst Man Cybern 9:62-66, 1979) of ``values``: the cut that maximises the
    between-class variance of the histogram; a constant image (a blank crop) has no cut and gives its value."""
    low, high = float(np.min(values)), float(np.max(values))
    if low == high:
        return low
    histogram, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(histogram)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(histogram * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = sum_low / weight_low
        mean_high = (sum_low[-1] - sum_low) / weight_high
        between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.nanargmax(between[:-1]))]) if bins > 1 else float(centres[0])


def rician_noise(image: np.ndarray, snr: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` as a magnitude image with Rician noise: sqrt((x + n1)^2 + n2^2), n1, n2 ~ N(0, sigma)
    (Gudbjartsson & Patz, Magn Reson Med 34:910-914, 1995). ``snr`` is relative to the image's own tissue
    signal: sigma = mean intensity above Otsu's threshold / snr, as ``Testing/Python/degrade.py`` defines it."""
    values = np.asarray(image, dtype=np.float32)
    tissue = values[values > otsu_threshold(values)]
    signal = float(tissue.mean()) if tissue.size else float(np.abs(values).mean())
    sigma = signal / float(snr)
    real = values + rng.normal(0.0, sigma, values.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, values.shape).astype(np.float32)
    return np.sqrt(real**2 + imaginary**2)


class SliceAugmenter:
    """Samples an augmented ``size`` x ``size`` window from a slice and its channel-index target.

    The image is one slice (rows, columns) or a slice with its neighbours (channels, rows, columns);
    every channel gets the same geometry and contrast change.
    """

    def __init__(self, size: int = 224, seed: int = 0, strength: float = 1.0, rician_noise_share: float = 0.0):
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.strength = strength
        self.rician_noise_share = rician_noise_share
        self.intensity = intensity_transform()
        self.intensity.set_random_state(seed=seed)

    def _random_intensity_transforms(self) -> list:
        return [t for t in self.intensity.transforms if hasattr(t, "R")]

    def random_states(self) -> dict:
        """Every random generator's state, for a checkpoint (see :meth:`restore_random_states`)."""
        return {"geometry": self.rng.bit_generator.state, "intensity": [t.R.get_state() for t in self._random_intensity_transforms()]}

    def restore_random_states(self, states: dict) -> None:
        """Restore :meth:`random_states`; an older checkpoint's bare geometry-generator state is accepted too."""
        if "geometry" not in states:  # older checkpoints kept the geometry generator only
            self.rng.bit_generator.state = states
            return
        self.rng.bit_generator.state = states["geometry"]
        for transform, state in zip(self._random_intensity_transforms(), states["intensity"]):
            transform.R.set_state(state)

    def geometry(self, image: np.ndarray, target: np.ndarray, centre_rc: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Resample a window around ``centre_rc`` (row, column) with random rotation and scale."""
        rng = self.rng
        height, width = image.shape[-2:]
        angle = math.radians(rng.uniform(-15, 15) * self.strength)
        scale = math.exp(rng.uniform(-0.2, 0.2) * self.strength)
        aspect = math.exp(rng.uniform(-0.1, 0.1) * self.strength)
        scale_r, scale_c = scale * aspect, scale / aspect  # output pixel size in input pixels
        centre_r = centre_rc[0] + rng.uniform(-60, 60)
        centre_c = centre_rc[1] + rng.uniform(-50, 50)
        # affine_grid works in normalised coordinates ([-1, 1] over the input, x = column)
        half = self.size / 2
        cos, sin = math.cos(angle), math.sin(angle)
        theta = torch.tensor(
            [
                [cos * scale_c * half / (width / 2), -sin * scale_r * half / (width / 2), (centre_c + 0.5) / (width / 2) - 1],
                [sin * scale_c * half / (height / 2), cos * scale_r * half / (height / 2), (centre_r + 0.5) / (height / 2) - 1],
            ],
            dtype=torch.float32,
        )[None]
        grid = F.affine_grid(theta, (1, 1, self.size, self.size), align_corners=False)
        source = torch.from_numpy(image.astype(np.float32)).reshape(1, -1, height, width)
        labels = torch.from_numpy(target.astype(np.float32))[None, None]
        out_image = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        out_target = F.grid_sample(labels, grid, mode="nearest", padding_mode="zeros", align_corners=False)[0, 0]
        return out_image, out_target.round().long()

    def resolution(self, image: torch.Tensor) -> torch.Tensor:
        if self.rng.random() > 0.3 * self.strength:
            return image
        factors = self.rng.uniform(1.0, 3.0, size=2)
        if self.rng.random() < 0.5:
            factors[self.rng.integers(2)] = 1.0
        low = (max(8, int(self.size / factors[0])), max(8, int(self.size / factors[1])))
        small = F.interpolate(image[None], size=low, mode="area")
        return F.interpolate(small, size=(self.size, self.size), mode="bilinear", align_corners=False)[0]

    def __call__(self, image: np.ndarray, target: np.ndarray, centre_rc: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
        out_image, out_target = self.geometry(image, target, centre_rc)
        out_image = self.resolution(out_image)
        if self.rician_noise_share and self.rng.random() < self.rician_noise_share:  # no draw when off: older runs repeat exactly
            low, high = np.log(RICIAN_SNR_RANGE)
            out_image = torch.from_numpy(rician_noise(out_image.numpy(), float(np.exp(self.rng.uniform(low, high))), self.rng))
        if self.rng.random() < 0.1 * self.strength:
            out_image = 1.0 - out_image
        out_image = self.intensity(out_image)
        out_image = torch.as_tensor(out_image, dtype=torch.float32)
        return out_image, out_target
