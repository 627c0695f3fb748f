"""Patient-space planes and small 2D patches resampled onto them.

Each structure is measured in its own mid-sagittal plane: the patient's sagittal plane (normal = the patient
left-right axis, i.e. the LPS x axis, whatever the image's direction matrix) through the structure's centroid.
Cobb angles use the coronal plane (normal = patient anterior-posterior axis) through a vertebra's centroid.

A plane patch is a 2D raster with square pixels of ``h`` mm whose axes are

* sagittal: u = patient anterior, v = patient superior;
* coronal: u = patient left, v = patient superior.

2D coordinates are *absolute* patient millimetres (u = point . U, v = point . V), so points found in parallel
planes (e.g. the corners of two neighbouring vertebrae, each in its own plane) can be compared directly.
Resampling uses ``sitk.Resample`` with nearest-neighbour interpolation, so label values and grey values are
never blended and oblique direction matrices and anisotropic voxels are handled by ITK's index-to-physical
mapping. Points outside the volume get the value :data:`OUTSIDE`, which is how "cut by the field of view" is
detected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

#: Label value of patch pixels that lie outside the image volume.
OUTSIDE = 65535


@dataclass(frozen=True)
class PlaneAxes:
    """An orthonormal right-handed frame (LPS unit vectors): in-plane u, v and the normal n = u x v."""

    name: str
    u: np.ndarray
    v: np.ndarray
    n: np.ndarray

    def to2d(self, points: np.ndarray) -> np.ndarray:
        """LPS points (..., 3) to plane coordinates (..., 2) in mm."""
        points = np.asarray(points, dtype=float)
        return np.stack([points @ self.u, points @ self.v], axis=-1)

    def depth(self, point: np.ndarray) -> float:
        return float(np.asarray(point, dtype=float) @ self.n)

    def to3d(self, points2d: np.ndarray, depth: float) -> np.ndarray:
        points2d = np.asarray(points2d, dtype=float)
        return points2d[..., :1] * self.u + points2d[..., 1:2] * self.v + depth * self.n


_A = np.array([0.0, -1.0, 0.0])  # anterior in LPS
_S = np.array([0.0, 0.0, 1.0])  # superior
_L = np.array([1.0, 0.0, 0.0])  # left

SAGITTAL = PlaneAxes("sagittal", _A, _S, np.cross(_A, _S))
CORONAL = PlaneAxes("coronal", _L, _S, np.cross(_L, _S))


@dataclass
class Patch:
    """A 2D raster in a plane: ``values[row, col]`` is at (u0 + col*h, v0 + row*h)."""

    values: np.ndarray  # (nv, nu)
    u0: float
    v0: float
    h: float
    axes: PlaneAxes
    depth: float

    def coords(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.stack([self.u0 + cols * self.h, self.v0 + rows * self.h], axis=-1)

    def points(self, mask: np.ndarray) -> np.ndarray:
        """Centres (N, 2) of the pixels where ``mask`` is true, in plane mm."""
        rows, cols = np.nonzero(mask)
        return self.coords(rows.astype(float), cols.astype(float))

    def lookup(self, points: np.ndarray, fill=0) -> np.ndarray:
        """Values at the pixels nearest to ``points`` (N, 2); ``fill`` outside the patch."""
        points = np.atleast_2d(points)
        cols = np.rint((points[:, 0] - self.u0) / self.h).astype(int)
        rows = np.rint((points[:, 1] - self.v0) / self.h).astype(int)
        inside = (rows >= 0) & (rows < self.values.shape[0]) & (cols >= 0) & (cols < self.values.shape[1])
        result = np.full(points.shape[0], fill, dtype=self.values.dtype)
        result[inside] = self.values[rows[inside], cols[inside]]
        return result


def in_plane_resolution(image: sitk.Image, axes: PlaneAxes) -> float:
    """Coarsest voxel footprint of ``image`` within the plane (mm): max_i spacing_i * |in-plane part of axis i|.

    For a sagittal 0.6 x 0.6 x 3.5 mm acquisition and a sagittal plane this is 0.6 mm; obliquity lets the
    thick axis leak into the plane.
    """
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    in_plane = np.sqrt(np.clip(1.0 - (axes.n @ direction) ** 2, 0.0, 1.0))
    return float(np.max(spacing * in_plane))


def through_plane_resolution(image: sitk.Image, axes: PlaneAxes) -> float:
    """Coarsest voxel extent of ``image`` across the plane (mm): max_i spacing_i * |normal part of axis i|.

    For a sagittal 0.6 x 0.6 x 3.5 mm acquisition and a sagittal plane this is the 3.5 mm slice thickness.
    """
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    return float(np.max(spacing * np.abs(axes.n @ direction)))


def patch_spacing(image: sitk.Image) -> float:
    """Pixel size of the plane patches: half the finest voxel spacing, clipped to 0.2-0.5 mm."""
    return float(np.clip(min(image.GetSpacing()) / 2.0, 0.2, 0.5))


def resample(
    image: sitk.Image,
    axes: PlaneAxes,
    depth: float,
    u_range: tuple[float, float],
    v_range: tuple[float, float],
    h: float,
    *,
    default: float = OUTSIDE,
    pixel_type: int | None = sitk.sitkUInt16,
) -> Patch:
    """Nearest-neighbour resampling of ``image`` onto the plane ``axes`` at ``depth`` over the given ranges."""
    u0 = np.floor(u_range[0] / h) * h
    v0 = np.floor(v_range[0] / h) * h
    nu = int(np.ceil((u_range[1] - u0) / h)) + 1
    nv = int(np.ceil((v_range[1] - v0) / h)) + 1
    return resample_grid(image, axes, depth, float(u0), float(v0), nu, nv, h, default=default, pixel_type=pixel_type)


def resample_like(image: sitk.Image, patch: Patch, *, default: float = 0, pixel_type: int | None = None) -> Patch:
    """``image`` resampled onto exactly the pixels of ``patch``."""
    nv, nu = patch.values.shape
    return resample_grid(
        image, patch.axes, patch.depth, patch.u0, patch.v0, nu, nv, patch.h, default=default, pixel_type=pixel_type
    )


def resample_grid(
    image: sitk.Image,
    axes: PlaneAxes,
    depth: float,
    u0: float,
    v0: float,
    nu: int,
    nv: int,
    h: float,
    *,
    default: float = OUTSIDE,
    pixel_type: int | None = sitk.sitkUInt16,
) -> Patch:
    origin = axes.to3d(np.array([u0, v0]), depth)
    direction = np.column_stack([axes.u, axes.v, axes.n]).ravel()
    output_type = image.GetPixelID() if pixel_type is None else pixel_type
    result = sitk.Resample(
        image,
        [int(nu), int(nv), 1],
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        origin.tolist(),
        [h, h, h],
        direction.tolist(),
        float(default),
        output_type,
    )
    values = sitk.GetArrayFromImage(result)[0]
    return Patch(values, float(u0), float(v0), h, axes, depth)


def bounds_2d(corners_lps: np.ndarray, axes: PlaneAxes, margin: float | tuple[float, float, float, float]):
    """u and v ranges covering LPS points, widened by ``margin`` (mm, or (u-, u+, v-, v+))."""
    p = axes.to2d(corners_lps)
    if np.isscalar(margin):
        margin = (margin, margin, margin, margin)
    return (
        (float(p[:, 0].min() - margin[0]), float(p[:, 0].max() + margin[1])),
        (float(p[:, 1].min() - margin[2]), float(p[:, 1].max() + margin[3])),
    )


def ring(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels of ``mask`` within ``width`` pixels (4-connected) of its outline.

    Every extreme point of a column or row profile - also in a slightly rotated frame - lies in this ring, so
    landmark fitting can work on the outline alone (a few hundred points instead of thousands).
    """
    inner = mask.copy()
    for _ in range(width):
        eroded = inner.copy()
        eroded[1:] &= inner[:-1]
        eroded[:-1] &= inner[1:]
        eroded[:, 1:] &= inner[:, :-1]
        eroded[:, :-1] &= inner[:, 1:]
        eroded[0] = eroded[-1] = False
        eroded[:, 0] = eroded[:, -1] = False
        inner = eroded
    return mask & ~inner


def touches(mask: np.ndarray, other: np.ndarray, margin_px: int = 0) -> bool:
    """True when a pixel of ``mask`` is within ``margin_px`` + 1 pixels (8-neighbourhood steps) of a pixel
    of ``other``, or on it; also at the patch edge."""
    if not mask.any():
        return False
    if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
        return True
    return bool((grow(mask, margin_px + 1) & other).any())


def grow(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` dilated by ``steps`` 8-neighbourhood steps."""
    grown = mask.copy()
    for _ in range(steps):
        grown = _grow_once(grown)
    return grown


def _grow_once(mask: np.ndarray) -> np.ndarray:
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown2 = grown.copy()
    grown2[:, 1:] |= grown[:, :-1]
    grown2[:, :-1] |= grown[:, 1:]
    return grown2
