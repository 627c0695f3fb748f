"""Localise, then segment: a coarse pass finds the slab and the in-plane box that hold the spine.

The coarse pass runs the network at its own 1 mm pixels (it was trained with zooms of 0.9-1.1 only,
so a downsampled image would not be recognised) on every ``COARSE_STEP_MM``-th sagittal slice, one
zoom, no mirror. Every body or disc pixel of those slices, projected onto the sagittal plane, gives
the column's outline; its largest connected part (isolated false positives elsewhere do not widen
the box) plus ``MARGIN_MM`` on each side is the box, and the sampled slices that hold it, plus one
sampling step and ``MARGIN_MM`` / 3 on either side, are the slab. The full-resolution pass then runs on
that sub-volume only; where the box meets the image's top edge the input is mirrored there
(:data:`EDGE_PAD_MM`, :func:`edge_padding`), so the network sees anatomy continuing instead of its
zero padding.

The margins were fixed before the validation runs (not tuned on them): 24 mm in-plane is more than a
body's half height, so a body the coarse pass saw only in part is wholly inside the box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

#: Sagittal spacing (mm) of the slices the coarse pass looks at.
COARSE_STEP_MM = 8.0
#: Context kept around the column's outline in the sagittal plane (mm).
MARGIN_MM = 24.0
#: Mirrored input added at the image's top edge (mm): the network leaves its outer 2-7 mm unlabelled.
EDGE_PAD_MM = 16.0


@dataclass(frozen=True)
class SpineBox:
    """Slices [slice_start, slice_stop) and, in the original in-plane grid, rows and columns [start, stop)."""

    slice_start: int
    slice_stop: int
    row_start: int
    row_stop: int
    column_start: int
    column_stop: int

    @classmethod
    def whole(cls, shape: tuple[int, int, int]) -> "SpineBox":
        return cls(0, shape[0], 0, shape[1], 0, shape[2])

    def index(self) -> tuple[slice, slice, slice]:
        return (slice(self.slice_start, self.slice_stop), slice(self.row_start, self.row_stop), slice(self.column_start, self.column_stop))

    def fraction_of(self, shape: tuple[int, int, int]) -> float:
        return (self.slice_stop - self.slice_start) * (self.row_stop - self.row_start) * (self.column_stop - self.column_start) / float(np.prod(shape))


def coarse_slices(n_slices: int, slice_spacing_mm: float) -> np.ndarray:
    """Indices of the slices the coarse pass runs on: every COARSE_STEP_MM, centred in the volume."""
    step = max(1, int(round(COARSE_STEP_MM / max(slice_spacing_mm, 1e-6))))
    first = (n_slices - 1) % step // 2
    return np.arange(first, n_slices, step)


def box_from_coarse(found: np.ndarray, sampled: np.ndarray, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> SpineBox | None:
    """The spine's box from the coarse pass.

    ``found``: (len(sampled), rows, columns) booleans, body or disc, on the original in-plane grid;
    ``sampled``: their slice indices; ``shape`` and ``spacing``: the canonical volume's. None when
    nothing was found (the caller then segments the whole volume).
    """
    projection = found.any(axis=0)
    if not projection.any():
        return None
    # bodies and discs of one column touch; bridge thin misses between them (10 mm)
    radius = [max(1, int(round(5.0 / s))) for s in spacing[1:]][::-1]
    closed = sitk.BinaryDilate(sitk.GetImageFromArray(projection.astype(np.uint8)), radius)
    components = sitk.GetArrayFromImage(sitk.ConnectedComponent(closed))
    sizes = np.bincount(components[projection].ravel())
    sizes[0] = 0
    column = (components == int(np.argmax(sizes))) & projection
    rows, columns = np.nonzero(column)
    margin_rows, margin_columns = (int(np.ceil(MARGIN_MM / s)) for s in spacing[1:])
    in_column = found[:, column].any(axis=1)
    slab = sampled[in_column]
    step = int(sampled[1] - sampled[0]) if len(sampled) > 1 else 1
    margin_slices = step + int(np.ceil(MARGIN_MM / 3.0 / spacing[0]))
    return SpineBox(
        max(0, int(slab.min()) - margin_slices),
        min(shape[0], int(slab.max()) + margin_slices + 1),
        max(0, int(rows.min()) - margin_rows),
        min(shape[1], int(rows.max()) + margin_rows + 1),
        max(0, int(columns.min()) - margin_columns),
        min(shape[2], int(columns.max()) + margin_columns + 1),
    )


def edge_padding(box: SpineBox, shape: tuple[int, int, int], working_spacing_mm: float = 1.0) -> tuple[int, int, int, int]:
    """Mirrored pixels (top, bottom, front, back) to add to the box's working-grid slices: EDGE_PAD_MM
    at the top when the box meets the image's top edge, nothing elsewhere.

    Only the top: a lumbar field of view cuts the thoracolumbar bodies there (T12 of the bundled
    sample reached the edge but was labelled only from 12 mm below it). Mirrored at the bottom, the
    sacrum doubles into an inverted copy and the network stops calling S1 S1 (bundled sample: level
    confidence 1.0 -> 0.59, anchor S1 -> L2, measured 2026-12-06); no body reaches the front or back.
    """
    pad = int(round(EDGE_PAD_MM / working_spacing_mm))
    return (pad if box.row_start == 0 else 0, 0, 0, 0)
