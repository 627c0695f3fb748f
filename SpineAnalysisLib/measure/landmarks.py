"""The four corners of a vertebral body (or disc) outline in a 2D plane.

Input: the pixel centres of one structure's mask in a plane patch (mm) and a rough orientation (the local
spine axis from the neighbouring structures, or the mask's principal axes). In 2D the axes are "front"
(+u: anterior in sagittal planes, left in coronal planes) and "up" (+v, superior).

Method (works for tilted/lordotic bodies and for wedge, biconcave or crushed ones):

1. In a frame rotated to the structure's orientation, coarse corners are the extreme mask points along the
   four diagonals (front+up, front-down, back+up, back-down). For a convex quadrilateral any direction
   inside the corner's normal cone picks that corner, so the frame may be off by up to about 40 degrees.
2. Four side profiles between the coarse corners (trimmed at both ends): for the endplates the top-/bottom-
   most mask point per column, for the walls the front-/back-most point per row.
3. A straight line is fitted to each profile by least squares, iteratively dropping points that lie deeper
   than ``tau`` (about 1.5 voxels) *inside* the structure (vertebral bodies: central endplate concavity,
   concave anterior wall, rounded corners) or *outside* it (discs, whose surfaces bulge into the endplate
   concavities). For bodies this yields the rim lines that a reader would draw along each endplate; each
   line is moved outward by half a patch pixel (pixel centres lie half a pixel inside the outline).
4. Corners are the intersections of neighbouring side lines (the "virtual" corners of the body outline).
   Because the lines average over the many boundary pixels of each side, corners are sub-voxel accurate on
   oblique and anisotropic grids, where the staircase of the voxelised outline would move a single extreme
   pixel by up to one voxel.
5. The frame is re-aligned to the mean endplate direction and steps 1-4 are repeated once.

Discs (``ends="extent"``) have rounded ends without straight walls: their upper and lower surface lines are
cut at the front-most and back-most extent of the outline instead of at wall lines.

The middle height is the chord of the mask along the structure's own up axis at the mid-point between the
front and back corners (mean over the columns of a 5 mm wide band, which averages the staircase of oblique
voxel grids), so it captures endplate concavity (biconcave fractures), unlike the distance between the
endplate lines. For vertebral bodies a focal endplate notch (Schmorl node) is bridged first
(:mod:`.endplate_notch`): only a broad central depression shortens the middle height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import endplate_notch


class LandmarkError(Exception):
    """The corners of a structure could not be found; ``str(error)`` is the reason."""


@dataclass(frozen=True)
class Quad:
    """Corners of a structure outline in plane mm; front = +u axis side, up = +v side."""

    front_up: np.ndarray
    front_down: np.ndarray
    back_up: np.ndarray
    back_down: np.ndarray
    area: float  # mm^2 of the mask in the plane
    middle_height: float | None  # mm, chord along the up axis at the front-back mid-point
    notches: tuple = ()  # focal endplate notches bridged for middle_height (:class:`.endplate_notch.Notch`)
    #: unit back-to-front directions of the endplate lines fitted for angles (``fit_quad(line_trim=...)``), when
    #: they were fitted apart from the corners; None: an endplate's direction is the one from corner to corner
    upper_line: np.ndarray | None = None
    lower_line: np.ndarray | None = None

    # sagittal names (anterior-superior, anterior-inferior, posterior-superior, posterior-inferior)
    @property
    def AS(self) -> np.ndarray:
        return self.front_up

    @property
    def AI(self) -> np.ndarray:
        return self.front_down

    @property
    def PS(self) -> np.ndarray:
        return self.back_up

    @property
    def PI(self) -> np.ndarray:
        return self.back_down

    @property
    def front_height(self) -> float:
        return float(np.linalg.norm(self.front_up - self.front_down))

    @property
    def back_height(self) -> float:
        return float(np.linalg.norm(self.back_up - self.back_down))

    @property
    def upper_width(self) -> float:
        return float(np.linalg.norm(self.front_up - self.back_up))

    @property
    def lower_width(self) -> float:
        return float(np.linalg.norm(self.front_down - self.back_down))

    @property
    def upper_direction(self) -> np.ndarray:
        """Back-to-front direction of the upper side (superior endplate) for angles: its own fitted line when
        there is one (:attr:`upper_line`), else the vector from the back to the front corner."""
        return self.upper_line if self.upper_line is not None else self.front_up - self.back_up

    @property
    def lower_direction(self) -> np.ndarray:
        return self.lower_line if self.lower_line is not None else self.front_down - self.back_down

    @property
    def upper_mid(self) -> np.ndarray:
        return (self.front_up + self.back_up) / 2.0

    @property
    def lower_mid(self) -> np.ndarray:
        return (self.front_down + self.back_down) / 2.0

    def front_axis(self) -> np.ndarray:
        """The structure's own front axis: the mean corner-to-corner direction of its two endplates."""
        upper = self.front_up - self.back_up
        lower = self.front_down - self.back_down
        d = upper / np.linalg.norm(upper) + lower / np.linalg.norm(lower)
        return d / np.linalg.norm(d)


def angle_of(vector: np.ndarray) -> float:
    """Angle of a 2D vector against the +u axis, degrees, counter-clockwise towards +v."""
    return float(np.degrees(np.arctan2(vector[1], vector[0])))


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """Signed angle from b to a in degrees: atan2(b x a, b . a), in (-180, 180]."""
    cross = b[0] * a[1] - b[1] * a[0]
    dot = b[0] * a[0] + b[1] * a[1]
    return float(np.degrees(np.arctan2(cross, dot)))


def principal_angle(points: np.ndarray, min_ratio: float = 1.3) -> float | None:
    """Angle (radians) of the major principal axis, pointed towards +u; None when the mask is too round."""
    d = points - points.mean(axis=0)
    cov = d.T @ d / max(len(d), 1)
    values, vectors = np.linalg.eigh(cov)
    if values[0] <= 0 or values[1] / values[0] < min_ratio**2:
        return None
    major = vectors[:, 1]
    if major[0] < 0:
        major = -major
    return float(np.arctan2(major[1], major[0]))


def _profile(t: np.ndarray, w: np.ndarray, lo: float, hi: float, trim: float, h: float, largest: bool):
    """Per bin of ``t`` (width h) within the trimmed [lo, hi], the point with the largest (or smallest) w."""
    span = hi - lo
    if span <= 2 * h:
        return None
    keep = (t >= lo + trim * span) & (t <= hi - trim * span)
    if keep.sum() < 3:
        return None
    t, w = t[keep], w[keep]
    bins = np.floor((t - lo) / h).astype(np.int64)
    order = np.lexsort((w if largest else -w, bins))
    b = bins[order]
    last = np.flatnonzero(np.r_[b[1:] != b[:-1], True])
    pick = order[last]
    if pick.size < 3:
        return None
    return t[pick], w[pick]


def _line(t: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Least-squares w = a + b t."""
    mt = t.mean()
    mw = w.mean()
    dt = t - mt
    denominator = float(dt @ dt)
    b = float(dt @ (w - mw)) / denominator if denominator > 0 else 0.0
    return float(mw - b * mt), b


def _robust_line(t: np.ndarray, w: np.ndarray, outward: float, tau: float, drop: str):
    """Fit w = a + b t, iteratively ignoring points more than ``tau`` inside (drop='inward') or outside."""
    keep = np.ones(t.size, dtype=bool)
    a = b = 0.0
    for _ in range(6):
        a, b = _line(t[keep], w[keep])
        r = outward * (w - (a + b * t))
        new_keep = r >= -tau if drop == "inward" else r <= tau
        if new_keep.sum() < max(3, int(0.3 * t.size)) or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return a, b


def _intersect(plate, wall):
    """Intersection of the plate line y = a1 + b1 x with the wall line x = a2 + b2 y."""
    a1, b1 = plate
    a2, b2 = wall
    det = 1.0 - b1 * b2
    if abs(det) < 0.2:
        return None
    x = (a2 + b2 * a1) / det
    return np.array([x, a1 + b1 * x])


def _fit_once(
    points: np.ndarray,
    angle: float,
    h: float,
    tau: float,
    drop: str,
    plate_trim: float,
    wall_trim: float,
    ends: str,
    line_trim: float | None = None,
):
    f = np.array([np.cos(angle), np.sin(angle)])
    n = np.array([-np.sin(angle), np.cos(angle)])
    centre = points.mean(axis=0)
    d = points - centre
    x = d @ f
    y = d @ n
    half = h / 2.0
    if ends == "extent":
        # discs: upper and lower surface lines, cut at the front-most and back-most extent of the outline
        x_front, x_back = float(x.max()) + half, float(x.min()) - half
        top, bottom = y > 0, y < 0
        upper = _profile(x[top], y[top], x_back, x_front, plate_trim, h, largest=True)
        lower = _profile(x[bottom], y[bottom], x_back, x_front, plate_trim, h, largest=False)
        if upper is None or lower is None:
            raise LandmarkError("outline too small to fit its upper and lower surfaces")
        a, b = _robust_line(*upper, +1.0, tau, drop)
        upper_line = (a + half * np.hypot(1.0, b), b)
        a, b = _robust_line(*lower, -1.0, tau, drop)
        lower_line = (a - half * np.hypot(1.0, b), b)
        if max(abs(upper_line[1]), abs(lower_line[1])) > np.tan(np.radians(45)):
            raise LandmarkError("upper and lower surfaces are too steep in the expected frame")
        corners = {}
        for key, line, xx in (
            ("fu", upper_line, x_front),
            ("fd", lower_line, x_front),
            ("bu", upper_line, x_back),
            ("bd", lower_line, x_back),
        ):
            corners[key] = centre + xx * f + (line[0] + line[1] * xx) * n
        return corners
    coarse = {
        "fu": np.argmax(x + y),
        "fd": np.argmax(x - y),
        "bu": np.argmax(-x + y),
        "bd": np.argmax(-x - y),
    }
    cx = {k: x[i] for k, i in coarse.items()}
    cy = {k: y[i] for k, i in coarse.items()}
    # each side's profile only from its own half: a bin of a rotated frame may miss the outline pixels of one
    # side and must then not pick up the opposite side
    top, bottom, fore, aft = y > 0, y < 0, x > 0, x < 0
    upper = _profile(x[top], y[top], cx["bu"], cx["fu"], plate_trim, h, largest=True)
    lower = _profile(x[bottom], y[bottom], cx["bd"], cx["fd"], plate_trim, h, largest=False)
    front = _profile(y[fore], x[fore], cy["fd"], cy["fu"], wall_trim, h, largest=True)
    back = _profile(y[aft], x[aft], cy["bd"], cy["bu"], wall_trim, h, largest=False)
    if upper is None or lower is None or front is None or back is None:
        raise LandmarkError("outline too small or irregular to find its four corners")
    a, b = _robust_line(*upper, +1.0, tau, drop)
    upper_line = (a + half * np.hypot(1.0, b), b)
    a, b = _robust_line(*lower, -1.0, tau, drop)
    lower_line = (a - half * np.hypot(1.0, b), b)
    lines = {}
    if line_trim is not None:  # endplate directions for angles, from profiles trimmed by line_trim instead
        for key, profile, outward in (
            ("upper", _profile(x[top], y[top], cx["bu"], cx["fu"], line_trim, h, largest=True), +1.0),
            ("lower", _profile(x[bottom], y[bottom], cx["bd"], cx["fd"], line_trim, h, largest=False), -1.0),
        ):
            if profile is None:
                slope = (upper_line if key == "upper" else lower_line)[1]
            else:
                slope = _robust_line(*profile, outward, tau, drop)[1]
            direction = f + slope * n
            lines[key] = direction / np.linalg.norm(direction)
    a, b = _robust_line(*front, +1.0, tau, drop)
    front_line = (a + half * np.hypot(1.0, b), b)
    a, b = _robust_line(*back, -1.0, tau, drop)
    back_line = (a - half * np.hypot(1.0, b), b)
    if max(abs(upper_line[1]), abs(lower_line[1]), abs(front_line[1]), abs(back_line[1])) > np.tan(np.radians(55)):
        raise LandmarkError("outline sides are too far from a quadrilateral to find its corners")
    size = min(cx["fu"] - cx["bu"], cy["fu"] - cy["fd"])
    limit = max(3.0, 0.3 * size)
    corners = {}
    for key, plate, wall in (
        ("fu", upper_line, front_line),
        ("fd", lower_line, front_line),
        ("bu", upper_line, back_line),
        ("bd", lower_line, back_line),
    ):
        p = _intersect(plate, wall)
        c = np.array([cx[key], cy[key]])
        if p is None or np.linalg.norm(p - c) > limit:
            p = c  # the extreme point itself when the side lines are implausible there
        corners[key] = centre + p[0] * f + p[1] * n
    corners.update({f"{key}_line": line for key, line in lines.items()})
    return corners


def fit_quad(
    points: np.ndarray,
    h: float,
    angle0: float,
    tau: float,
    *,
    drop: str = "inward",
    plate_trim: float = 0.1,
    wall_trim: float = 0.15,
    iterations: int = 2,
    area: float | None = None,
    ends: str = "walls",
    chord_points: np.ndarray | None = None,
    line_trim: float | None = None,
) -> Quad:
    """Corners of the outline given by pixel centres ``points`` (N, 2, mm) of pixel size ``h``.

    ``points`` may be all mask pixels or only its outline ring (:func:`plane.ring`); then pass the mask
    ``area`` (mm^2), which is otherwise ``len(points) * h**2``, and all mask pixels as ``chord_points`` for the
    middle chord (a ring may miss one side of a thin rotated column).

    ``angle0`` (radians) is the rough direction of the front axis; ``tau`` (mm) the depth beyond which profile
    points are treated as concavities (``drop="inward"``, vertebral bodies) or bulges (``drop="outward"``,
    discs). ``ends="walls"`` intersects the endplate lines with lines fitted to the front and back walls
    (vertebral bodies); ``ends="extent"`` cuts the upper and lower surface lines at the outline's front-most and
    back-most points (discs, whose rounded ends have no straight wall). ``line_trim`` (``ends="walls"`` only): also fit
    each endplate's line with that share trimmed at both ends and give its direction as the quad's ``upper_line`` /
    ``lower_line`` for angles, the corners staying those of ``plate_trim``. Raises :class:`LandmarkError` with a reason when no plausible quadrilateral is found.
    """
    if len(points) < 20:
        raise LandmarkError("too few pixels in the plane to find its corners")
    angle = angle0
    corners = None
    for _ in range(max(1, iterations)):
        corners = _fit_once(points, angle, h, tau, drop, plate_trim, wall_trim, ends, line_trim if ends == "walls" else None)
        d = corners["fu"] - corners["bu"]
        e = corners["fd"] - corners["bd"]
        if np.linalg.norm(d) < h or np.linalg.norm(e) < h:
            raise LandmarkError("degenerate outline (endplate shorter than a pixel)")
        axis = d / np.linalg.norm(d) + e / np.linalg.norm(e)
        angle = float(np.arctan2(axis[1], axis[0]))
    assert corners is not None
    area = float(len(points) * h * h) if area is None else float(area)
    quad = Quad(corners["fu"], corners["fd"], corners["bu"], corners["bd"], area, None)
    # plausibility: a quadrilateral with its corners in place
    f = quad.front_axis()
    n = np.array([-f[1], f[0]])
    if (quad.front_up - quad.back_up) @ f <= 0 or (quad.front_down - quad.back_down) @ f <= 0:
        raise LandmarkError("front and back corners are not in order")
    if (quad.front_up - quad.front_down) @ n <= 0 or (quad.back_up - quad.back_down) @ n <= 0:
        raise LandmarkError("upper and lower corners are not in order")
    chord, notches = _middle_chord(points if chord_points is None else chord_points, quad, h, tau if drop == "inward" else None)
    return Quad(quad.front_up, quad.front_down, quad.back_up, quad.back_down, quad.area, chord, notches,
                corners.get("upper_line"), corners.get("lower_line"))


def _chord_frame(points: np.ndarray, quad: Quad, h: float):
    """The middle chord's frame: (corners' centre, front axis f, up axis n, points' coordinates x along f and y along
    n, half-width of the band of columns around the front-back mid-point, each point's column bin)."""
    f = quad.front_axis()
    n = np.array([-f[1], f[0]])
    centre = (quad.front_up + quad.front_down + quad.back_up + quad.back_down) / 4.0
    d = points - centre
    x = d @ f
    y = d @ n
    band = max(2.5, 2.0 * h)
    bins = np.floor((x + band) / h).astype(np.int64)
    return centre, f, n, x, y, band, bins


def middle_chord_ends(points: np.ndarray, quad: Quad, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Where a viewer draws the middle height (plane mm, bottom and top end): along the up axis through the corners'
    front-back mid-point, centred between the mean bottom and top of the mask's columns in the band
    :func:`_middle_chord` averages, ``quad.middle_height`` long (the engine keeps the chord's length, not its place)."""
    centre, _, n, x, y, band, bins = _chord_frame(points, quad, h)
    middle = 0.0
    inside = np.abs(x) <= band
    if inside.sum() >= 3:
        order, first, last = _columns(y[inside], bins[inside])
        middle = (float(np.mean(y[inside][order[last]])) + float(np.mean(y[inside][order[first]]))) / 2.0
    half = quad.middle_height / 2.0
    return centre + n * (middle - half), centre + n * (middle + half)


def _middle_chord(points: np.ndarray, quad: Quad, h: float, tau: float | None = None) -> tuple[float | None, tuple]:
    """Mean chord of the mask along the up axis over the columns within 2.5 mm of the front-back mid-point, and the
    focal endplate notches bridged for it (only with ``tau``, the concavity depth of vertebral bodies)."""
    centre, f, n, x, y, band, bins = _chord_frame(points, quad, h)
    notches = ()
    if tau is not None:  # every column of the body, for the endplate profiles the notches are found in
        order, first, last = _columns(y, bins)
        columns = bins[order][first]
        raise_mm, notches = _bridge_notches(columns, y[order[last]], y[order[first]], quad, centre, f, n, h, band, tau)
    sel = np.abs(x) <= band
    if sel.sum() < 3:
        return None, ()
    y, bins = y[sel], bins[sel]
    order, first, last = _columns(y, bins)
    chords = y[order[last]] - y[order[first]] + h
    if tau is not None:
        chords = chords + raise_mm[np.searchsorted(columns, bins[order][first])]
    counts = last - first + 1
    full = counts >= 0.5 * np.median(counts)  # drop the sliver bins at the band's edges
    return float(np.mean(chords[full])), notches


def _columns(y: np.ndarray, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points sorted by column bin, then along the up axis: (order, index of each bin's first point in that
    order, of its last point)."""
    order = np.lexsort((y, bins))
    b = bins[order]
    first = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    last = np.flatnonzero(np.r_[b[1:] != b[:-1], True])
    return order, first, last


def _bridge_notches(columns, top, bottom, quad: Quad, centre, f, n, h: float, band: float, tau: float):
    """Per column, how much the middle chord grows when focal notches of either endplate are bridged, and the
    notches (:func:`.endplate_notch.bridge`)."""
    xc = (columns + 0.5) * h - band

    def rim(p: np.ndarray, q: np.ndarray) -> np.ndarray:  # the endplate line through two corners, at xc
        (xp, yp), (xq, yq) = (p - centre) @ np.column_stack([f, n]), (q - centre) @ np.column_stack([f, n])
        return yp + (xc - xp) * (yq - yp) / (xq - xp)

    ap_depth = (quad.upper_width + quad.lower_width) / 2.0
    raise_mm = np.zeros(columns.size)
    notches = []
    for name, depth in (("superior", rim(quad.back_up, quad.front_up) - (top + h / 2.0)),
                        ("inferior", (bottom - h / 2.0) - rim(quad.back_down, quad.front_down))):
        bridged, notch = endplate_notch.bridge(xc, depth, h, ap_depth, tau, name)
        if notch is not None:
            raise_mm += depth - bridged
            notches.append(notch)
    return raise_mm, tuple(notches)
