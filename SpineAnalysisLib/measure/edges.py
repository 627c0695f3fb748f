"""Field-of-view edges: which corners a cut structure still has, and chain-end vertebrae labelled only in part.

* **Cut corners.** A structure whose mask ends within :data:`FIELD_EDGE_MARGIN_MM` of the volume border in its
  mid-plane may be cut by it, so its own shape (heights, ratios, grade, volume) is not measured. Its four corners
  are still fitted, and each corner is judged on its own: a corner within the margin of the border is "cut", the
  others are not. A measurement that needs only intact corners (the disc below a vertebra cut at the top, the slip
  on it, an endplate angle) is made.
* **Incomplete chain ends.** The network may label only part of a vertebra at either end of the labelled chain
  (the bundled sample's T12: the body reaches the image top, its mask ends 12 mm below it). Such a body looks
  like a severe wedge fracture. A vertebra is *incomplete* on a side when (1) no labelled disc or vertebra follows
  on that side, (2) its endplate there lies within :data:`INCOMPLETE_EDGE_MM` of the image edge (room for at most a
  disc: a whole next level would have been labelled), and (3) the body continues: its height is below
  :data:`INCOMPLETE_HEIGHT_RATIO` of the neighbouring body's, or the image beyond that endplate matches the body
  (median within :data:`BODY_LIKE`) and resembles it more than the neighbouring disc. An incomplete body keeps its heights (with the note) but gets no wedge ratio,
  biconcavity, Genant grade, depth, volume or BianqueNet HV, and its free endplate is used by nothing.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .. import labels as scheme
from . import plane
from .landmarks import Quad

#: A structure ending this close (mm) to the volume border may be cut by it: an outline cannot tell, and the
#: shipped network leaves the outermost 2-7 mm of a field of view unlabelled.
FIELD_EDGE_MARGIN_MM = 5.0
#: a free endplate this close (mm) to the image edge leaves room for a disc at most (healthy discs 6-16 mm)
INCOMPLETE_EDGE_MM = 20.0
#: a chain-end body shorter than this fraction of its neighbour's height is taken as labelled in part
INCOMPLETE_HEIGHT_RATIO = 0.8

#: grey values beyond an endplate within this fraction of the body's median count as "the body continues"
BODY_LIKE = 0.15

#: the two corners of each endplate (Quad attribute names)
ENDPLATE_CORNERS = {"upper": ("front_up", "back_up"), "lower": ("front_down", "back_down")}
ENDPLATE_NAMES = {"upper": "superior", "lower": "inferior"}


def cut_corners(quad: Quad, near_edge: plane.Patch) -> frozenset:
    """Names of the corners of ``quad`` lying on pixels of ``near_edge`` (True within the margin of the border,
    or outside the patch)."""
    names = ("front_up", "front_down", "back_up", "back_down")
    points = np.array([getattr(quad, name) for name in names])
    hits = near_edge.lookup(points, fill=True)
    return frozenset(name for name, hit in zip(names, hits) if hit)


def _outward(quad: Quad, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(back corner, front corner, unit normal pointing away from the body) of one endplate."""
    front, back = (getattr(quad, name) for name in ENDPLATE_CORNERS[side])
    d = front - back
    normal = np.array([-d[1], d[0]]) / np.linalg.norm(d)  # +90 deg from back->front: towards +v (up)
    return back, front, normal if side == "upper" else -normal


def edge_distance(image: sitk.Image, quad: Quad, side: str, axes: plane.PlaneAxes, depth: float, step: float,
                  limit: float = INCOMPLETE_EDGE_MM) -> float | None:
    """Distance (mm) from the endplate's mid-point to the volume border, outward along the endplate normal;
    None when the border is farther than ``limit``."""
    back, front, normal = _outward(quad, side)
    start = (back + front) / 2.0
    size = np.asarray(image.GetSize(), dtype=float)
    for t in np.arange(0.0, limit + step, step):
        point = axes.to3d(start + t * normal, depth)
        index = np.asarray(image.TransformPhysicalPointToContinuousIndex(point.tolist()))
        if np.any(index < -0.5) or np.any(index > size - 0.5):
            return float(t)
    return None


def continues_in_image(image_patch: plane.Patch, quad: Quad, side: str, body_mask: np.ndarray,
                       disc_values: np.ndarray | None) -> bool | None:
    """Whether the grey values just beyond the endplate (1-4 mm, central 60 % of its length) match the body's own
    (median within :data:`BODY_LIKE`) and resemble them more than the neighbouring disc's; None when undecidable (no disc values, no contrast, too few
    pixels in view)."""
    if disc_values is None or disc_values.size < 10 or not body_mask.any():
        return None
    back, front, normal = _outward(quad, side)
    h = image_patch.h
    points = [back + f * (front - back) + t * normal for f in np.linspace(0.2, 0.8, 13) for t in np.arange(1.0, 4.0 + h, h)]
    beyond = image_patch.lookup(np.array(points), fill=np.nan).astype(float)
    beyond = beyond[np.isfinite(beyond)]
    if beyond.size < 10:
        return None
    body = float(np.median(image_patch.values[body_mask]))
    disc = float(np.median(disc_values))
    if abs(disc - body) < 0.1 * max(abs(disc), abs(body), 1e-6):
        return None  # the body and the disc look alike in this image: it cannot tell
    out = float(np.median(beyond))
    return abs(out - body) <= BODY_LIKE * abs(body) and abs(out - body) < abs(out - disc)


def free_sides(present: set, vertebra: int, above: int | None, below: int | None) -> list[str]:
    """Sides of ``vertebra`` with no labelled vertebra or disc next to them (S1's lower side is never free: the
    sacrum continues by definition and nothing uses its lower edge)."""
    sides = []
    previous = scheme.previous_vertebra(vertebra)
    disc_above = scheme.disc_label(previous) if previous is not None and scheme.is_vertebra(previous) else None
    if above is None and disc_above not in present:
        sides.append("upper")
    if vertebra != 26 and below is None and scheme.disc_label(vertebra) not in present:
        sides.append("lower")
    return sides
