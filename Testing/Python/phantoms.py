"""Analytic lumbar-spine phantoms with known geometry, rendered into label maps and T2-like images.

Geometry is defined in patient space (LPS millimetres). Each vertebral body and disc is a prism: a convex
polygon in the sagittal (a, s) plane - a = anterior = -y_LPS, s = superior = z_LPS - extruded over a lateral
range of x_LPS, optionally rotated about a pivot (for coronal tilts). Rendering evaluates, for every voxel
centre of a grid (any spacing, any direction matrix), its patient coordinates and tests membership in the
shapes, so the truth (corners, heights, angles, slips, volumes, centroids) is exact and independent of the
grid; only the voxelisation of the outline limits accuracy (about half a voxel per boundary).

T2-like intensities: background 40, vertebral body 60 (dark), disc annulus 100, disc nucleus 200, epidural
fat 150 (0-3 mm behind the bodies and discs), CSF 250 (3-18 mm behind), so the disc's delta SI is known:
peak1 = 200 (or 100), peak2 = 100 (or 200): delta SI = |200 - 100| * 255 / 250 = 102.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # make SpineAnalysisLib importable however pytest is started
    sys.path.insert(0, str(_ROOT))

BACKGROUND, BODY, ANNULUS, NUCLEUS, FAT, CSF = 40, 60, 100, 200, 150, 250
CSF_LABEL = 61


def rotation(axis, degrees: float) -> np.ndarray:
    """3x3 rotation matrix about ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    t = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


#: direction matrices (columns = image axes in LPS)
LPS_DIRECTION = np.eye(3)
RAS_DIRECTION = np.diag([-1.0, -1.0, 1.0])
#: the real data's sagittal stack: axis 0 inferior, axis 1 posterior, axis 2 right
SAGITTAL_STACK = np.column_stack([[0, 0, -1.0], [0, 1.0, 0], [-1.0, 0, 0]])
#: a sagittal acquisition as a scanner writes it: axis 0 posterior, axis 1 inferior, axis 2 right-to-left slices
SAGITTAL_SCANNER = np.column_stack([[0, 1.0, 0], [0, 0, -1.0], [1.0, 0, 0]])


def oblique(degrees: float = 20.0, axis=(0.3, 0.5, 0.8), base: np.ndarray = LPS_DIRECTION) -> np.ndarray:
    return rotation(axis, degrees) @ base


def _signed_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _ccw(poly) -> np.ndarray:
    poly = np.asarray(poly, dtype=float)
    return poly if _signed_area(poly) > 0 else poly[::-1].copy()


def to_lps(a: float, s: float, x: float = 0.0) -> np.ndarray:
    return np.array([x, -a, s], dtype=float)


@dataclass
class Prism:
    """A convex (a, s) polygon extruded over x in ``x_range``; optional rotation ``R`` about ``pivot``."""

    label: int  # 0: image only
    polygon: np.ndarray
    x_range: tuple[float, float]
    value: float
    R: np.ndarray | None = None
    pivot: np.ndarray | None = None

    def __post_init__(self):
        self.polygon = _ccw(self.polygon)

    def _local(self, points: np.ndarray) -> np.ndarray:
        if self.R is None:
            return points
        return (points - self.pivot) @ self.R + self.pivot  # R^T (p - pivot) + pivot, row-vector form

    def contains(self, points: np.ndarray) -> np.ndarray:
        q = self._local(points)
        a, s, x = -q[:, 1], q[:, 2], q[:, 0]
        inside = (x >= self.x_range[0]) & (x <= self.x_range[1])
        poly = self.polygon
        for i in range(len(poly)):
            p0, p1 = poly[i], poly[(i + 1) % len(poly)]
            inside &= (p1[0] - p0[0]) * (s - p0[1]) - (p1[1] - p0[1]) * (a - p0[0]) >= 0
        return inside

    @property
    def area(self) -> float:
        return _signed_area(self.polygon)

    @property
    def volume(self) -> float:
        return self.area * (self.x_range[1] - self.x_range[0])

    def centroid_lps(self) -> np.ndarray:
        poly = self.polygon
        x, y = poly[:, 0], poly[:, 1]
        c = x * np.roll(y, -1) - np.roll(x, -1) * y
        area = c.sum() / 2
        ca = ((x + np.roll(x, -1)) * c).sum() / (6 * area)
        cs = ((y + np.roll(y, -1)) * c).sum() / (6 * area)
        p = to_lps(ca, cs, (self.x_range[0] + self.x_range[1]) / 2)
        if self.R is not None:
            p = self.R @ (p - self.pivot) + self.pivot
        return p

    def corners_lps(self) -> np.ndarray:
        pts = np.array([to_lps(a, s, x) for a, s in self.polygon for x in self.x_range])
        if self.R is not None:
            pts = (pts - self.pivot) @ self.R.T + self.pivot
        return pts


def _down(e: np.ndarray) -> np.ndarray:
    """Unit vector 90 degrees clockwise from ``e`` in (a, s): the inferior normal of an endplate."""
    return np.array([e[1], -e[0]])


def _unit(v):
    return v / np.linalg.norm(v)


@dataclass
class Body:
    label: int
    AS: np.ndarray
    AI: np.ndarray
    PS: np.ndarray
    PI: np.ndarray


@dataclass
class SpinePhantom:
    """Vertebral bodies (corners in (a, s) mm) and the discs between them, plus painting shapes."""

    bodies: dict[int, Body]
    order: list[int]
    width: float = 40.0
    x_center: float = 0.0
    disc_labels: bool = True
    csf: bool = True
    canal_label: bool = False
    dents: dict[int, float] = field(default_factory=dict)  # vertebra -> depth of a central dent in both endplates
    # vertebra -> (width at the endplate, width at the floor, depth) mm of a pit at the middle of both endplates;
    # not part of body_heights' middle height (a test states what a pit of its shape should do)
    pits: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    coronal_tilts: dict[int, float] = field(default_factory=dict)  # vertebra -> rotation about the AP axis (deg)

    # ----- truth -----
    def body_heights(self, label: int) -> tuple[float, float, float]:
        b = self.bodies[label]
        ant = float(np.linalg.norm(b.AS - b.AI))
        post = float(np.linalg.norm(b.PS - b.PI))
        mid = self._middle_chord(b) - 2 * self.dents.get(label, 0.0)
        return ant, mid, post

    def _middle_chord(self, b: Body) -> float:
        f = _unit(_unit(b.AS - b.PS) + _unit(b.AI - b.PI))
        n = np.array([-f[1], f[0]])
        c = (b.AS + b.AI + b.PS + b.PI) / 4
        return _line_cut(c, n, b.PS, b.AS) - _line_cut(c, n, b.PI, b.AI)

    def depth(self, label: int) -> float:
        b = self.bodies[label]
        return float((np.linalg.norm(b.AS - b.PS) + np.linalg.norm(b.AI - b.PI)) / 2)

    def hv(self, label: int) -> float:
        """BianqueNet vertebral height: body area / mean endplate width (mid-sagittal)."""
        return self.body_area(label) / self.depth(label)

    def disc_pairs(self) -> list[tuple[int, int]]:
        return [(u, l) for u, l in zip(self.order[:-1], self.order[1:])]

    def disc_heights(self, upper: int) -> tuple[float, float, float]:
        u = self.bodies[upper]
        lower = self.order[self.order.index(upper) + 1]
        l = self.bodies[lower]
        ant = float(np.linalg.norm(u.AI - l.AS))
        post = float(np.linalg.norm(u.PI - l.PS))
        mid = float(np.linalg.norm((u.AI + u.PI) / 2 - (l.AS + l.PS) / 2))
        return ant, mid, post

    def disc_chord(self, upper: int, fraction: float) -> float:
        """Height of the disc polygon at ``fraction`` of its extent (0 = posterior end, 1 = anterior end) along
        the bisector of its two endplates, measured perpendicular to that bisector."""
        u = self.bodies[upper]
        l = self.bodies[self.order[self.order.index(upper) + 1]]
        f = _unit(_unit(u.AI - u.PI) + _unit(l.AS - l.PS))
        n = np.array([-f[1], f[0]])
        poly = self.disc_polygon(upper)
        x = poly @ f
        xf = x.min() + fraction * (x.max() - x.min())
        ys = []
        for i in range(len(poly)):
            p, q = poly[i], poly[(i + 1) % len(poly)]
            xp, xq = p @ f, q @ f
            if (xp - xf) * (xq - xf) <= 0 and xp != xq:
                t = (xf - xp) / (xq - xp)
                ys.append((p + t * (q - p)) @ n)
        return float(max(ys) - min(ys))

    def segmental_angle(self, upper: int) -> float:
        u = self.bodies[upper]
        l = self.bodies[self.order[self.order.index(upper) + 1]]
        return _angle(u.AI - u.PI) - _angle(l.AS - l.PS)

    def lordosis(self, top: int = 20, bottom: int = 26) -> float:
        """L1 superior to S1 superior endplate (or to L5 inferior when bottom = 24)."""
        t = self.bodies[top]
        b = self.bodies[bottom]
        ref = (b.AS - b.PS) if bottom == 26 else (b.AI - b.PI)
        return _angle(t.AS - t.PS) - _angle(ref)

    def sacral_slope(self) -> float:
        b = self.bodies[26]
        return -_angle(b.AS - b.PS)

    def slip_percent(self, upper: int) -> float:
        """Offset of the two posterior cortices (lines through PI of the upper and PS of the lower body, each
        perpendicular to its endplate) where they cross the disc's mid-line, along it, / lower endplate length."""
        u = self.bodies[upper]
        l = self.bodies[self.order[self.order.index(upper) + 1]]
        e = l.AS - l.PS
        along = _unit(_unit(u.AI - u.PI) + _unit(e))
        across = np.array([-along[1], along[0]])
        middle = (u.PI + l.PS) / 2

        def crossing(corner, endplate):
            d = _unit(endplate)
            d = np.array([-d[1], d[0]])
            return corner + d * ((middle - corner) @ across) / (d @ across)

        offset = crossing(u.PI, u.AI - u.PI) - crossing(l.PS, e)
        return float(100 * (offset @ along) / np.linalg.norm(e))

    def centroid_ras(self, label: int) -> np.ndarray:
        p = self.body_prism(label).centroid_lps()
        return np.array([-p[0], -p[1], p[2]])

    def dent_area(self, label: int) -> float:
        """Area (a, s) the central endplate dents take out of a body (both endplates)."""
        depth = self.dents.get(label, 0.0)
        b = self.bodies[label]
        widths = np.linalg.norm(b.AS - b.PS) + np.linalg.norm(b.AI - b.PI)
        return float((0.5 + 0.2) / 2 * widths * depth)

    def body_area(self, label: int) -> float:
        mouth, floor, depth = self.pits.get(label, (0.0, 0.0, 0.0))
        return self.body_prism(label).area - self.dent_area(label) - (mouth + floor) * depth

    def volume(self, label: int) -> float:
        return self.body_area(label) * self.width

    # ----- shapes -----
    def _x_range(self, half: float | None = None) -> tuple[float, float]:
        half = self.width / 2 if half is None else half
        return (self.x_center - half, self.x_center + half)

    def body_prism(self, label: int) -> Prism:
        b = self.bodies[label]
        R = pivot = None
        if label in self.coronal_tilts:
            R = rotation((0, 1, 0), self.coronal_tilts[label])
            pivot = Prism(label, [b.PI, b.AI, b.AS, b.PS], self._x_range(), BODY).centroid_lps()
        return Prism(label, np.array([b.PI, b.AI, b.AS, b.PS]), self._x_range(), BODY, R, pivot)

    def disc_polygon(self, upper: int) -> np.ndarray:
        u = self.bodies[upper]
        l = self.bodies[self.order[self.order.index(upper) + 1]]
        return np.array([l.PS, l.AS, u.AI, u.PI])

    def shapes(self) -> list[Prism]:
        shapes: list[Prism] = []
        # posterior band: epidural fat then CSF, behind every body and disc
        if self.csf:
            outlines = [(self.bodies[v].PS, self.bodies[v].PI) for v in self.order]
            outlines += [(self.bodies[u].PI, self.bodies[l].PS) for u, l in self.disc_pairs()]
            for top, bottom in outlines:
                back = _back_direction(top, bottom)
                fat = np.array([top, top + 3 * back, bottom + 3 * back, bottom])
                csf = np.array([top + 3 * back, top + 18 * back, bottom + 18 * back, bottom + 3 * back])
                shapes.append(Prism(0, fat, self._x_range(8.0), FAT))
                shapes.append(Prism(CSF_LABEL if self.canal_label else 0, csf, self._x_range(8.0), CSF))
        for u, l in self.disc_pairs():
            label = 100 + u if self.disc_labels else 0
            poly = self.disc_polygon(u)
            shapes.append(Prism(label, poly, self._x_range(), ANNULUS))
            centre = poly.mean(axis=0)
            shapes.append(Prism(label, centre + 0.55 * (poly - centre), self._x_range(self.width / 2 * 0.55), NUCLEUS))
        for v in self.order:
            shapes.append(self.body_prism(v))
        # central endplate dents (biconcave bodies) are filled by the disc (or background)
        for v, depth in self.dents.items():
            b = self.bodies[v]
            i = self.order.index(v)
            for top, (p, q), (pd, qd) in (
                (True, (b.PS, b.AS), (b.PI, b.AI)),
                (False, (b.PI, b.AI), (b.PS, b.AS)),
            ):
                inward = _unit(((pd + qd) / 2) - ((p + q) / 2))
                p1, p2 = p + 0.25 * (q - p), p + 0.75 * (q - p)
                p3, p4 = p + 0.6 * (q - p) + depth * inward, p + 0.4 * (q - p) + depth * inward
                outward = -inward
                poly = np.array([p1 + outward * 0.5, p2 + outward * 0.5, p3, p4])
                neighbour = (self.order[i - 1] if i > 0 else None) if top else (v if i + 1 < len(self.order) else None)
                label = 100 + neighbour if (neighbour is not None and self.disc_labels) else 0
                shapes.append(Prism(label, poly, self._x_range(), ANNULUS if label else BACKGROUND))
        for v, (mouth, floor, depth) in self.pits.items():
            shapes += self._pit_shapes(v, mouth, floor, depth)
        return shapes

    def _pit_shapes(self, v: int, mouth: float, floor: float, depth: float) -> list[Prism]:
        """A trapezoid pit centred on each endplate, filled by the neighbouring disc (or background)."""
        b = self.bodies[v]
        i = self.order.index(v)
        shapes = []
        for top, (p, q), (pd, qd) in ((True, (b.PS, b.AS), (b.PI, b.AI)), (False, (b.PI, b.AI), (b.PS, b.AS))):
            along = _unit(q - p)
            middle = (p + q) / 2
            inward = _unit(((pd + qd) / 2) - middle)
            mouth_points = [middle - along * mouth / 2 - inward * 0.5, middle + along * mouth / 2 - inward * 0.5]
            floor_points = [middle + along * floor / 2 + inward * depth, middle - along * floor / 2 + inward * depth]
            neighbour = (self.order[i - 1] if i > 0 else None) if top else (v if i + 1 < len(self.order) else None)
            label = 100 + neighbour if (neighbour is not None and self.disc_labels) else 0
            shapes.append(Prism(label, np.array(mouth_points + floor_points), self._x_range(), ANNULUS if label else BACKGROUND))
        return shapes


def _back_direction(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Posterior normal of a back wall running from ``top`` down to ``bottom``."""
    d = _unit(bottom - top)  # pointing inferior
    back = np.array([d[1], -d[0]])  # rotate clockwise: for d = (0, -1) gives (-1, 0) = posterior
    return back


def _angle(v) -> float:
    return float(np.degrees(np.arctan2(v[1], v[0])))


def _line_cut(c, n, p, q) -> float:
    """Parameter t where the line c + t n meets the segment p-q."""
    d = q - p
    m = np.array([[n[0], -d[0]], [n[1], -d[1]]])
    t, _ = np.linalg.solve(m, p - c)
    return float(t)


def build_spine(
    levels=(20, 21, 22, 23, 24),
    *,
    depth: float = 36.0,
    heights=26.0,
    discs=10.0,
    top=(0.0, 60.0),
    top_angle: float = 0.0,
    slips: dict[int, float] | None = None,
    **options,
) -> SpinePhantom:
    """A stack of trapezoid bodies, top to bottom.

    ``heights``: one number, one ``(anterior, posterior)`` pair, a list with one entry per level, or a dict
    {vertebra label: entry, "default": entry}. ``discs``: the same per disc (keyed by the vertebra above). ``top``: (a, s) of the first body's posterior-superior corner;
    ``top_angle``: tilt of its superior endplate (degrees, positive = rising anteriorly). ``slips``: vertebra ->
    anterior shift (mm) of that vertebra and everything above it, along the superior endplate of the one below.
    """
    levels = list(levels)

    def per(value, i, key):
        if isinstance(value, dict):
            value = value.get(key, value.get("default"))
        elif isinstance(value, list):
            value = value[i]
        if np.isscalar(value):
            return float(value), float(value)
        return float(value[0]), float(value[1])

    bodies: dict[int, Body] = {}
    PS = np.array(top, dtype=float)
    e = np.array([np.cos(np.radians(top_angle)), np.sin(np.radians(top_angle))])
    AS = PS + depth * e
    for i, label in enumerate(levels):
        ha, hp = per(heights, i, label)
        m = _down(_unit(AS - PS))
        AI = AS + ha * m
        PI = PS + hp * m
        bodies[label] = Body(label, AS.copy(), AI, PS.copy(), PI)
        if i + 1 < len(levels):
            da, dp = per(discs, i, label)
            m2 = _down(_unit(AI - PI))
            AS = AI + da * m2
            PS = PI + dp * m2
            # keep the body depth constant
            AS = PS + depth * _unit(AS - PS)
    for label, shift in (slips or {}).items():
        i = levels.index(label)
        below = bodies[levels[i + 1]]
        d = shift * _unit(below.AS - below.PS)
        for upper in levels[: i + 1]:
            b = bodies[upper]
            bodies[upper] = Body(upper, b.AS + d, b.AI + d, b.PS + d, b.PI + d)
    return SpinePhantom(bodies, levels, **options)


def make_grid(phantom_bounds: np.ndarray, spacing, direction=LPS_DIRECTION, margin: float = 12.0) -> sitk.Image:
    """An empty UInt16 image whose grid covers the LPS points ``phantom_bounds`` plus ``margin`` mm."""
    direction = np.asarray(direction, dtype=float)
    spacing = np.asarray(spacing, dtype=float)
    lo = phantom_bounds.min(axis=0) - margin
    hi = phantom_bounds.max(axis=0) + margin
    centre = (lo + hi) / 2
    half = (hi - lo) / 2
    extent = 2 * np.abs(direction.T) @ half  # along each image axis
    size = np.ceil(extent / spacing).astype(int) + 1
    origin = centre - direction @ (spacing * (size - 1) / 2)
    image = sitk.Image([int(s) for s in size], sitk.sitkUInt16)
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.ravel().tolist())
    image.SetOrigin(origin.tolist())
    return image


def phantom_bounds(phantom: SpinePhantom) -> np.ndarray:
    pts = [s.corners_lps() for s in phantom.shapes()]
    return np.concatenate(pts)


def render(phantom: SpinePhantom, grid: sitk.Image, *, image_dtype=np.uint8) -> tuple[sitk.Image, sitk.Image]:
    """(label map UInt16, T2-like image) of ``phantom`` on ``grid``; each shape is tested only in its bounding block."""
    size = np.array(grid.GetSize())
    matrix = np.asarray(grid.GetDirection()).reshape(3, 3) @ np.diag(grid.GetSpacing())
    origin = np.asarray(grid.GetOrigin())
    inverse = np.linalg.inv(matrix)
    labels = np.zeros(size[::-1], dtype=np.uint16)
    intensity = np.full(size[::-1], BACKGROUND, dtype=np.float32)
    for shape in phantom.shapes():
        corners = shape.corners_lps()
        idx = (corners - origin) @ inverse.T
        lo = np.clip(np.floor(idx.min(axis=0)).astype(int) - 1, 0, size - 1)
        hi = np.clip(np.ceil(idx.max(axis=0)).astype(int) + 1, 0, size - 1)
        if (hi < lo).any():
            continue
        ii, jj, kk = np.meshgrid(
            np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), np.arange(lo[2], hi[2] + 1), indexing="ij"
        )
        ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1).astype(float)
        pts = ijk @ matrix.T + origin
        inside = shape.contains(pts)
        sel = ijk[inside].astype(int)
        labels[sel[:, 2], sel[:, 1], sel[:, 0]] = shape.label
        intensity[sel[:, 2], sel[:, 1], sel[:, 0]] = shape.value
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(grid)
    image = sitk.GetImageFromArray(intensity.astype(image_dtype))
    image.CopyInformation(grid)
    return label_image, image


def render_phantom(phantom: SpinePhantom, spacing=(1.0, 1.0, 1.0), direction=LPS_DIRECTION, margin: float = 12.0, **kw):
    grid = make_grid(phantom_bounds(phantom), spacing, direction, margin)
    return render(phantom, grid, **kw)


def crop(image: sitk.Image, lower=(0, 0, 0), upper=(0, 0, 0)) -> sitk.Image:
    """Remove ``lower``/``upper`` voxels from each end of each axis (physical positions kept)."""
    size = [s - lo - hi for s, lo, hi in zip(image.GetSize(), lower, upper)]
    return sitk.RegionOfInterest(image, size, list(lower))


def keep_labels(label_map: sitk.Image, keep) -> sitk.Image:
    """A copy of ``label_map`` with every label not in ``keep`` set to 0."""
    array = sitk.GetArrayFromImage(label_map)
    array[~np.isin(array, list(keep))] = 0
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(label_map)
    return result
