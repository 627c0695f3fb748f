"""Input validation and per-label voxel statistics for the measurement engine.

The checks are those of :func:`SpineAnalysisLib.imageio.check_label_map` (same grid as the image, integer
values, every value in the label scheme, not empty) plus "3D" and "finite" for the image, with the same
one-line messages. They are re-implemented here on the labelled voxels only (``np.flatnonzero`` and a
bincount of the non-zero values) because ``np.unique`` over a whole 361 x 361 x 57 volume alone takes
0.2-0.4 s, the whole time budget of a measurement run; label maps that are not unsigned integers take
the slower :func:`imageio.check_label_map` path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .. import imageio
from .. import labels as scheme
from ..errors import InputError


@dataclass(frozen=True)
class LabelStats:
    """Voxel statistics of one label (indices in ITK order i, j, k)."""

    label: int
    count: int
    centroid_lps: np.ndarray  # mm, LPS
    index_min: np.ndarray  # (3,) int, ITK order
    index_max: np.ndarray  # (3,) int, inclusive
    touches_border: bool  # some voxel lies on the outermost layer of the volume


@dataclass
class Volume:
    """A validated label map (and optional image) with what every measurement needs."""

    label_map: sitk.Image
    image: sitk.Image | None
    stats: dict[int, LabelStats]
    index_to_lps: np.ndarray  # 4x4
    voxel_volume: float  # mm^3

    @property
    def spacing(self) -> np.ndarray:
        return np.asarray(self.label_map.GetSpacing(), dtype=float)

    @property
    def direction(self) -> np.ndarray:
        return np.asarray(self.label_map.GetDirection(), dtype=float).reshape(3, 3)

    def bbox_corners_lps(self, label: int, pad_voxels: float = 0.5) -> np.ndarray:
        """The 8 corners (LPS, mm) of the voxel bounding box of ``label``, widened by ``pad_voxels``."""
        s = self.stats[label]
        lo = s.index_min - pad_voxels
        hi = s.index_max + pad_voxels
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        return corners @ self.index_to_lps[:3, :3].T + self.index_to_lps[:3, 3]


def _describe_dimension(image: sitk.Image, what: str, needed: str) -> str:
    return f"{what}: is a {image.GetDimension()}D image; {needed} is needed"


def check_image(image: sitk.Image) -> None:
    """The image must be a finite scalar 3D volume."""
    if not isinstance(image, sitk.Image):
        raise InputError(f"image: expected a SimpleITK image, got {type(image).__name__}")
    if image.GetDimension() != 3:
        raise InputError(_describe_dimension(image, "image", "a 3D volume"))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"image: has {image.GetNumberOfComponentsPerPixel()} components per voxel; a scalar image is needed")
    imageio.check_finite(image, "image")


def _unknown_message(what: str, unknown: list[int]) -> str:
    shown = ", ".join(map(str, unknown[:8])) + (" ..." if len(unknown) > 8 else "")
    return (
        f"{what}: labels {shown} are outside the SpineAnalysis scheme "
        "(vertebrae 1-28 VerSe ids, discs 100 + vertebra above, 60 cord, 61 canal)"
    )


def load(image: sitk.Image | None, label_map: sitk.Image) -> Volume:
    """Validate ``image`` and ``label_map`` and collect per-label statistics.

    Raises :class:`InputError` (one line) for: a label map or image that is not 3D, an image with NaN or
    infinite voxels, grids that differ, a label map with non-integer values, labels outside the scheme, or no
    labelled voxel at all.
    """
    what = "label map"
    if not isinstance(label_map, sitk.Image):
        raise InputError(f"{what}: expected a SimpleITK image, got {type(label_map).__name__}")
    if label_map.GetDimension() != 3:
        raise InputError(_describe_dimension(label_map, what, "a 3D label map"))
    if label_map.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{what}: has {label_map.GetNumberOfComponentsPerPixel()} components per voxel; a scalar label map is needed")
    if image is not None:
        check_image(image)
        if not imageio.same_grid(label_map, image):
            raise InputError(
                f"{what} and image are on different grids ({imageio.describe_grid(label_map)} vs "
                f"{imageio.describe_grid(image)}); resample the label map onto the image first"
            )
    array = sitk.GetArrayViewFromImage(label_map)
    if not np.issubdtype(array.dtype, np.unsignedinteger) or array.dtype.itemsize > 4:
        # slow but complete path (floats, signed integers): the shared checker, then a UInt16 copy
        checked = imageio.check_label_map(label_map, None, what)
        fixed = sitk.GetImageFromArray(checked)
        fixed.CopyInformation(label_map)
        label_map = fixed
        array = sitk.GetArrayViewFromImage(label_map)
    flat_array = array.reshape(-1)
    flat = np.flatnonzero(flat_array)
    if flat.size == 0:
        raise InputError(f"{what}: is empty (no labelled voxel)")
    values = flat_array[flat]
    if values.dtype.itemsize > 2 and int(values.max()) > 65535:
        big = np.unique(values[values > 65535])
        raise InputError(_unknown_message(what, [int(v) for v in big]))
    values = values.astype(np.uint16, copy=False)
    counts = np.bincount(values)
    present = np.flatnonzero(counts)
    present = present[present != 0]
    unknown = [int(v) for v in present if not scheme.is_known(int(v))]
    if unknown:
        raise InputError(_unknown_message(what, unknown))

    # sort voxels by label (radix sort for 16-bit keys); within a label they stay in memory order (k, j, i)
    order = np.argsort(values, kind="stable")
    flat = flat[order]
    nz, ny, nx = array.shape
    k, rest = np.divmod(flat, ny * nx)
    j, i = np.divmod(rest, nx)
    sizes = counts[present]
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    ends = starts + sizes - 1
    i_min, i_max = np.minimum.reduceat(i, starts), np.maximum.reduceat(i, starts)
    j_min, j_max = np.minimum.reduceat(j, starts), np.maximum.reduceat(j, starts)
    k_min, k_max = k[starts], k[ends]
    i_mean = np.add.reduceat(i, starts) / sizes
    j_mean = np.add.reduceat(j, starts) / sizes
    k_mean = np.add.reduceat(k, starts) / sizes

    matrix = imageio.index_to_lps_matrix(label_map)
    size = np.array(label_map.GetSize())
    stats: dict[int, LabelStats] = {}
    for n, label in enumerate(present):
        lo = np.array([i_min[n], j_min[n], k_min[n]], dtype=int)
        hi = np.array([i_max[n], j_max[n], k_max[n]], dtype=int)
        centroid = matrix[:3, :3] @ np.array([i_mean[n], j_mean[n], k_mean[n]]) + matrix[:3, 3]
        touches = bool((lo == 0).any() or (hi == size - 1).any())
        stats[int(label)] = LabelStats(int(label), int(sizes[n]), centroid, lo, hi, touches)
    voxel_volume = float(np.prod(label_map.GetSpacing()))
    return Volume(label_map, image, stats, matrix, voxel_volume)
