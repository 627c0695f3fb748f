"""Mid-plane sections of each structure and their landmarks, computed once per measurement run.

:class:`Spine` wraps a validated :class:`~.inputs.Volume` and lazily computes, per label:

* the mid-sagittal section (patient sagittal plane through the label's centroid) - a small label patch
  around the structure's bounding box, the structure's mask, whether the field of view cuts it in that plane,
  and its four corners (:func:`.landmarks.fit_quad`);
* the mid-coronal section of vertebrae (for the Cobb angle);
* the grey values of the image on a disc's sagittal patch (for delta SI).

Neighbour relations (vertebra below/above, the local spine axis used as orientation prior) come from the
labels present in the map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .. import labels as scheme
from . import edges, plane
from .edges import FIELD_EDGE_MARGIN_MM
from .inputs import Volume
from .landmarks import LandmarkError, Quad, fit_quad, principal_angle

CUT_REASON = "cut by the field of view (within 5 mm of the volume border in its mid-{plane} plane)"
#: start of the reason given for a chain-end vertebra labelled only in part (:meth:`Spine.incomplete`)
INCOMPLETE_NOTE = "incomplete chain-end vertebra"

#: An S1 endplate shorter than this fraction of the L5 endplate facing it across the disc is not used. With corners
#: averaged over the mid-sagittal slab (:data:`SLAB_HALF_WIDTH_MM`) the 616 facing-endplate ratios of the 63 shared
#: expert body label maps measure 0.805-1.24, the 8 expert S1s under L5 0.81-1.08. The model's S1 at the bottom of a
#: 224 mm field of view is often drawn only in part (MyoSegmenTUM, whose experts do not outline S1): on its masks of
#: the 60 healthy image cases 25 of 53 S1s measure 0.30-0.79, and every one looked at on the mid-sagittal image
#: (VB3_01 0.60, VB3_09 0.70, VB3_15 0.79) is a blob at the edge of the sacrum's first body, whose L5-S1 heights,
#: angle and sacral slope were then measured on the wrong corner (up to 26 mm anterior height, 37 degrees angle and
#: 64 degrees slope before this rule; docs/validation.md, "Values left empty"). Was 0.6 on single-plane corners,
#: where that blob measured 0.30-0.59 and the slab moved three of them across it (0.58-0.60).
FACING_ENDPLATE_MIN_RATIO = 0.8
#: The limit for the bodies above the sacrum: a fracture lowers a body's heights, not its endplates'
#: anterior-posterior length; a mask that lost a corner shortens it. Below every expert pair (0.76 on single-plane
#: corners, 0.805 slab-averaged); on the model's masks of the 60 healthy image cases (58 volunteers) only two bodies
#: above S1 fall below it: VB3_39's L5 (0.67-0.68, drawn without its front corner: graded 3, and its L4-L5 angle 26
#: degrees off the expert mask's, before this limit, which it prompted) and VB3_44's T12 (0.40, cut by the top edge).
BODY_FACING_MIN_RATIO = 0.7

#: A vertebral body's corners (and so its heights, endplate angles and slip) are the mean over a mid-sagittal slab:
#: the centroid's sagittal plane and the planes this far (mm) to either side. One plane's outline moves by a pixel
#: with where the plane happens to cut the voxel grid and the mask's edge; on the training split's level-certain
#: cases (Chu, MyoSegmenTUM; 1.10.0's masks against the experts') the mean of three planes 2 mm apart lowered the
#: mean |model - expert| difference of the segmental angle from 2.87 to 2.51 degrees and of the anterior height
#: from 1.05 to 0.95 mm (the adoption rule was fixed before those numbers; docs/validation.md, "Mid-sagittal slab").
#: Readers measure on the one mid-sagittal slice they judge central, itself uncertain by a slice or two.
SLAB_HALF_WIDTH_MM = 2.0

#: Angles (segmental angle, lordosis, sacral slope, Cobb) take each vertebral endplate's direction from its own line
#: fit, with this share of the endplate trimmed at both ends (the corners for heights trim 0.1, which keeps the
#: rounded rims out of the corner positions), averaged over the planes at :data:`ANGLE_SLAB_HALF_WIDTHS_MM`. On the
#: training split's level-certain cases (1.10.0's masks against the experts') this lowered the mean |model - expert|
#: of the segmental angle from 2.53 to 2.04 degrees (4 mm thick copies 2.24 -> 1.77) and the phantoms' largest angle
#: errors from 2.29 to 1.27 degrees, heights unchanged by construction; the rule was fixed before those numbers
#: (docs/validation.md, "Endplate lines for angles"). None: corner-to-corner directions, as up to 2026-12-07.
ANGLE_PLATE_TRIM: float | None = 0.05

#: Distances (mm, on a 1 mm map; multiples of :meth:`Spine.slab_offset` on thick-slice maps) of the side planes the
#: endplate directions for angles are averaged over, to either side of the centroid plane.
ANGLE_SLAB_HALF_WIDTHS_MM = (2.0, 4.0)


def facing_min_ratio(vertebra: int) -> float:
    """The shortest an endplate of ``vertebra`` may be, against the endplate facing it across the disc, before the
    body counts as labelled in part: :data:`FACING_ENDPLATE_MIN_RATIO` for S1, :data:`BODY_FACING_MIN_RATIO` above."""
    return FACING_ENDPLATE_MIN_RATIO if vertebra == scheme.SACRUM else BODY_FACING_MIN_RATIO


@dataclass
class Section:
    """One structure in one plane."""

    label: int
    patch: plane.Patch  # label values (plane.OUTSIDE outside the volume)
    mask: np.ndarray  # bool, the structure's pixels
    area: float  # mm^2
    cut: bool  # touches the volume border in this plane
    quad: Quad | None  # the whole outline's corners; None when cut by the field of view or not found
    reason: str  # why quad is None ("" otherwise)
    partial: Quad | None = None  # corners fitted also on a cut outline (== quad when not cut)
    cut_corners: frozenset = frozenset()  # names of partial's corners within the margin of the volume border
    _points: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def h(self) -> float:
        return self.patch.h

    def points(self) -> np.ndarray:
        """Plane coordinates (N, 2, mm) of the structure's pixels (computed once)."""
        if self._points is None:
            self._points = self.patch.points(self.mask)
        return self._points


class Spine:
    """Lazy, cached per-structure geometry of one label map."""

    def __init__(self, volume: Volume):
        self.volume = volume
        self.label_map = volume.label_map
        self.h = plane.patch_spacing(self.label_map)
        self.present = set(volume.stats)
        self.vertebrae = sorted((v for v in self.present if scheme.is_vertebra(v)), key=scheme.anatomical_rank)
        self.discs_labelled = sorted((d for d in self.present if scheme.is_disc(d)), key=scheme.anatomical_rank)
        self._sections: dict[tuple[str, int], Section] = {}
        self._tau: dict[str, float] = {}
        self._image_patches: dict[int, plane.Patch] = {}
        self._incomplete: dict[int, tuple[str, str] | None] = {}

    # ----- neighbours -----
    def vertebra_below(self, vertebra: int) -> int | None:
        """The labelled vertebra directly below (transitional L6 / T13 respected), else None."""
        if vertebra == 24 and 25 in self.present:
            return 25
        if vertebra == 19 and 28 in self.present:
            return 28
        below = scheme.next_vertebra(vertebra)
        return below if below in self.present else None

    def vertebra_above(self, vertebra: int) -> int | None:
        for v in self.vertebrae:
            if self.vertebra_below(v) == vertebra:
                return v
        return None

    def disc_neighbours(self, disc: int) -> tuple[int, int | None]:
        """(vertebra above, vertebra below) of a disc label; below = the standard neighbour when not labelled."""
        above = scheme.vertebra_above_disc(disc)
        below = self.vertebra_below(above)
        if below is None:
            below = scheme.next_vertebra(above)
        return above, below

    def discs(self) -> list[int]:
        """Discs to report: labelled ones and those between two labelled vertebrae."""
        found = set(self.discs_labelled)
        for v in self.vertebrae:
            if self.vertebra_below(v) is not None:
                found.add(scheme.disc_label(v))
        return sorted(found, key=scheme.anatomical_rank)

    def disc_name(self, disc: int) -> str:
        above, below = self.disc_neighbours(disc)
        return scheme.disc_name(disc, below)

    # ----- orientation prior -----
    def prior_angle(self, label: int, axes: plane.PlaneAxes, points: np.ndarray) -> float:
        """Rough direction (radians) of the structure's front axis in the plane.

        The local spine axis joins the centroids of the nearest labelled structures above and below (vertebrae
        or discs); the front axis is perpendicular to it. Without neighbours: the mask's major principal axis,
        else the patient axis.
        """
        rank = scheme.anatomical_rank(label)
        ranked = [(scheme.anatomical_rank(x), x) for x in self.present if scheme.is_vertebra(x) or scheme.is_disc(x)]
        above = [x for r, x in sorted(ranked) if r < rank]
        below = [x for r, x in sorted(ranked) if r > rank]
        c = self.volume.stats
        top = c[above[-1]].centroid_lps if above else c[label].centroid_lps
        bottom = c[below[0]].centroid_lps if below else c[label].centroid_lps
        up = axes.to2d(top) - axes.to2d(bottom)
        if np.linalg.norm(up) > 1e-6:
            up = up / np.linalg.norm(up)
            if up[1] > 0.3:  # a spine axis running roughly superior-inferior
                return float(np.arctan2(-up[0], up[1]))
        angle = principal_angle(points)
        return 0.0 if angle is None or abs(angle) > np.radians(45) else angle

    def tau(self, axes: plane.PlaneAxes) -> float:
        """Depth (mm) beyond which outline deviations count as concavities: 1.5 in-plane voxels, at least 1 mm."""
        if axes.name not in self._tau:
            self._tau[axes.name] = max(1.0, 1.5 * plane.in_plane_resolution(self.label_map, axes))
        return self._tau[axes.name]

    # ----- sections -----
    def section(self, label: int, axes: plane.PlaneAxes = plane.SAGITTAL) -> Section:
        key = (axes.name, label)
        if key not in self._sections:
            self._sections[key] = self._make_section(label, axes)
        return self._sections[key]

    def _margins(self, label: int, axes: plane.PlaneAxes):
        if scheme.is_disc(label) and axes is plane.SAGITTAL:
            return (45.0, 6.0, 15.0, 15.0)  # room behind the disc for the CSF reference
        return (3.0, 3.0, 3.0, 3.0)

    def _make_section(self, label: int, axes: plane.PlaneAxes) -> Section:
        depth = axes.depth(self.volume.stats[label].centroid_lps)
        section = self._plane_section(label, axes, depth)
        if section.quad is not None and axes is plane.SAGITTAL and scheme.is_vertebra(label):
            section.quad = section.partial = self._slab_quad(label, depth, section.quad)
        return section

    def _plane_section(self, label: int, axes: plane.PlaneAxes, depth: float) -> Section:
        """The structure's section in the plane ``axes`` at ``depth`` (mm along the plane's normal)."""
        u_range, v_range = plane.bounds_2d(self.volume.bbox_corners_lps(label), axes, self._margins(label, axes))
        patch = plane.resample(self.label_map, axes, depth, u_range, v_range, self.h)
        mask = patch.values == label
        area = float(mask.sum()) * self.h * self.h
        near_edge = plane.grow(patch.values == plane.OUTSIDE, int(round(FIELD_EDGE_MARGIN_MM / self.h)) + 1)
        cut = bool((mask & near_edge).any()) or plane.touches(mask, np.zeros_like(mask))
        quad = None
        reason = ""
        section = Section(label, patch, mask, area, cut, None, "")
        if not mask.any():
            reason = f"not present in its mid-{axes.name} plane"
        else:
            outline = patch.points(plane.ring(mask))
            drop = "outward" if scheme.is_disc(label) else "inward"
            try:
                prior = self.prior_angle(label, axes, outline)
                quad = fit_quad(
                    outline,
                    self.h,
                    prior,
                    self.tau(axes),
                    drop=drop,
                    area=area,
                    plate_trim=0.15 if scheme.is_disc(label) else 0.1,
                    wall_trim=0.15,
                    ends="extent" if scheme.is_disc(label) else "walls",
                    chord_points=None if scheme.is_disc(label) else section.points(),
                    line_trim=None if scheme.is_disc(label) else ANGLE_PLATE_TRIM,
                )
            except LandmarkError as error:
                reason = f"corners not found in its mid-{axes.name} plane: {error}"
            if quad is not None:
                section.partial = quad
                if cut:
                    section.cut_corners = edges.cut_corners(quad, plane.Patch(near_edge, patch.u0, patch.v0, patch.h, axes, patch.depth))
            if cut:
                quad = None
                reason = CUT_REASON.format(plane=axes.name)
        section.quad = quad
        section.reason = reason
        return section

    def slab_offset(self) -> float:
        """Distance (mm) of the two side planes of a body's mid-sagittal slab from its centroid plane: at least
        :data:`SLAB_HALF_WIDTH_MM`, and at least the slice thickness of a thick-slice label map projected on the
        sagittal normal, so on a sagittal stack the side planes are the neighbouring slices. On a stack tilted by t that
        is cos^2 t of a slice along the slice axis: part of each side plane still samples the centre slice (13 % of
        its pixels at 20 degrees). A whole slice along the normal (thickness / cos t) measured worse on tilted 4 mm
        phantom grids (mean vertebral height error 0.196 -> 0.215 mm, segmental angle 0.56 -> 0.61 degrees; 10 grids
        tilted 6-22 degrees): the side outline is then the centre's moved by whole voxels, its errors not independent."""
        return max(SLAB_HALF_WIDTH_MM, plane.through_plane_resolution(self.label_map, plane.SAGITTAL))

    def slab_side_offsets(self) -> tuple[float, ...]:
        """Depths (mm, from the centroid plane) of the slab's side planes: :meth:`slab_offset` to either side."""
        distance = self.slab_offset()
        return (-distance, distance)

    def angle_side_offsets(self) -> tuple[float, ...]:
        """Depths (mm, from the centroid plane) of the side planes whose endplate lines give a body's endplate
        directions for angles (only with :data:`ANGLE_PLATE_TRIM`): :data:`ANGLE_SLAB_HALF_WIDTHS_MM`, scaled by
        one slice per :data:`SLAB_HALF_WIDTH_MM` on thick-slice maps, to either side."""
        scale = self.slab_offset() / SLAB_HALF_WIDTH_MM
        return tuple(sign * d * scale for d in ANGLE_SLAB_HALF_WIDTHS_MM for sign in (-1, 1))

    def _slab_quad(self, vertebra: int, depth: float, centre: Quad) -> Quad:
        """The body's corners and middle height averaged over its mid-sagittal slab (:data:`SLAB_HALF_WIDTH_MM`):
        the centroid plane's and those of the two side planes whose outline is whole (not cut, corners found).
        With separate endplate lines for angles (:data:`ANGLE_PLATE_TRIM`), their mean unit direction over the
        centroid plane and the whole outlines at :meth:`angle_side_offsets`."""
        sides = {}

        def side(offset):
            if offset not in sides:
                sides[offset] = self._plane_section(vertebra, plane.SAGITTAL, depth + offset).quad
            return sides[offset]

        quads = [centre] + [q for q in map(side, self.slab_side_offsets()) if q is not None]
        with_lines = [centre]
        if centre.upper_line is not None:
            with_lines += [q for q in map(side, self.angle_side_offsets()) if q is not None]
        if len(quads) == 1 and len(with_lines) == 1:
            return centre
        lines = (centre.upper_line, centre.lower_line)
        if centre.upper_line is not None:
            lines = tuple(_mean_direction([getattr(q, name) for q in with_lines]) for name in ("upper_line", "lower_line"))
        corners = [np.mean([getattr(q, name) for q in quads], axis=0) for name in ("front_up", "front_down", "back_up", "back_down")]
        chords = [q.middle_height for q in quads if q.middle_height is not None]
        middle = float(np.mean(chords)) if centre.middle_height is not None else None
        return Quad(*corners, centre.area, middle, centre.notches, *lines)

    def chain_ends_near_edge(self) -> list[int]:
        """The first and last labelled vertebra or disc (cranio-caudal) when it lies within
        :data:`edges.INCOMPLETE_EDGE_MM` of the volume border: the network may have labelled it only in part."""
        chain = sorted((x for x in self.present if scheme.is_vertebra(x) or scheme.is_disc(x)), key=scheme.anatomical_rank)
        size = np.asarray(self.label_map.GetSize()) - 1
        spacing = self.volume.spacing
        ends = []
        for label in dict.fromkeys(chain[:1] + chain[-1:]):
            stats = self.volume.stats[label]
            gap = np.minimum(stats.index_min, size - stats.index_max) * spacing
            if float(gap.min()) <= edges.INCOMPLETE_EDGE_MM:
                ends.append(label)
        return ends

    # ----- per-endplate access (cut corners, incomplete chain ends) -----
    def endplate(self, vertebra: int, side: str, axes: plane.PlaneAxes = plane.SAGITTAL) -> tuple[Quad | None, str]:
        """The corners of ``vertebra`` when the two corners of its ``side`` ("upper"/"lower") endplate are
        measurable - also when other corners are cut by the field of view - else (None, reason). Not when this
        endplate is too short against the one facing it (:meth:`shorter_than_facing`: the body labelled in part)."""
        name = scheme.vertebra_name(vertebra)
        if vertebra not in self.present:
            return None, f"{name} not labelled"
        section = self.section(vertebra, axes)
        if section.partial is None:
            return None, f"{name} {section.reason}"
        endplate = f"{name} {edges.ENDPLATE_NAMES[side]} endplate"
        if section.cut_corners & set(edges.ENDPLATE_CORNERS[side]):
            return None, f"{endplate} {CUT_REASON.format(plane=axes.name)}"
        if axes is plane.SAGITTAL:
            incomplete = self.incomplete(vertebra)
            if incomplete is not None and incomplete[0] == side:
                return None, f"{endplate} is the free end of an {incomplete[1]}"
            short = self.shorter_than_facing(vertebra, side)
            if short:
                return None, f"{endplate} {short}"
        return section.partial, ""

    def facing_ratio(self, vertebra: int, side: str) -> tuple[float, int] | None:
        """(length of the ``side`` endplate of ``vertebra`` / length of the endplate facing it across the disc,
        the vertebra across the disc) in the mid-sagittal plane; None when either body has no corners."""
        neighbour = self.vertebra_above(vertebra) if side == "upper" else self.vertebra_below(vertebra)
        quad = self.section(vertebra).partial if vertebra in self.present else None
        facing = self.section(neighbour).partial if neighbour is not None else None
        if quad is None or facing is None:
            return None
        own_width = quad.upper_width if side == "upper" else quad.lower_width
        facing_width = facing.lower_width if side == "upper" else facing.upper_width
        return (own_width / facing_width if facing_width > 0 else 1.0), neighbour

    def shorter_than_facing(self, vertebra: int, side: str) -> str:
        """Why the ``side`` endplate of ``vertebra`` is too short against the endplate facing it across the disc
        (below :func:`facing_min_ratio`; the body is then probably labelled in part), else ''."""
        min_ratio = facing_min_ratio(vertebra)
        facing = self.facing_ratio(vertebra, side)
        if facing is None or facing[0] >= min_ratio:
            return ""
        ratio, neighbour = facing
        return (f"is {100 * ratio:.0f} % as long as {scheme.vertebra_name(neighbour)}'s facing one (adjacent endplates: "
                f"at least {100 * min_ratio:.0f} %): {scheme.vertebra_name(vertebra)} labelled in part")

    def labelled_in_part(self, vertebra: int) -> str:
        """Why ``vertebra`` seems labelled in part (an endplate too short against the one facing it), else ''."""
        for side in ("upper", "lower"):
            short = self.shorter_than_facing(vertebra, side)
            if short:
                return f"its {edges.ENDPLATE_NAMES[side]} endplate {short}"
        return ""

    def body(self, vertebra: int) -> tuple[Quad | None, str]:
        """The whole body's corners for its own shape (heights ratios, grade, HV): None when cut, not found,
        incomplete or labelled in part, with the reason."""
        section = self.section(vertebra)
        if section.quad is None:
            return None, section.reason
        incomplete = self.incomplete(vertebra)
        if incomplete is not None:
            return None, incomplete[1]
        in_part = self.labelled_in_part(vertebra)
        if in_part:
            return None, f"labelled in part: {in_part}"
        return section.quad, ""

    def incomplete(self, vertebra: int) -> tuple[str, str] | None:
        """(side, reason) when ``vertebra`` is a chain end labelled only in part (:mod:`.edges`), else None."""
        if vertebra not in self._incomplete:
            self._incomplete[vertebra] = self._find_incomplete(vertebra)
        return self._incomplete[vertebra]

    def _find_incomplete(self, vertebra: int) -> tuple[str, str] | None:
        section = self.section(vertebra)
        quad = section.quad
        if quad is None or not scheme.is_vertebra(vertebra):
            return None
        above, below = self.vertebra_above(vertebra), self.vertebra_below(vertebra)
        for side in edges.free_sides(self.present, vertebra, above, below):
            distance = edges.edge_distance(self.label_map, quad, side, plane.SAGITTAL, section.patch.depth, self.h)
            if distance is None:
                continue
            evidence = []
            neighbour = below if side == "upper" else above
            if neighbour is not None and self.section(neighbour).quad is not None:
                other = self.section(neighbour).quad
                ratio = max(quad.front_height, quad.back_height) / max(other.front_height, other.back_height)
                if ratio < edges.INCOMPLETE_HEIGHT_RATIO:
                    evidence.append(f"{100 * ratio:.0f} % of {scheme.vertebra_name(neighbour)}'s height")
            if self._continues_in_image(vertebra, quad, side, neighbour):
                evidence.append(f"the image beyond its {edges.ENDPLATE_NAMES[side]} endplate looks like the body, not a disc")
            if evidence:
                return side, (f"{INCOMPLETE_NOTE}: its mask ends {distance:.0f} mm from the image edge while "
                              f"the body continues ({'; '.join(evidence)})")
        return None

    def _continues_in_image(self, vertebra: int, quad: Quad, side: str, neighbour: int | None) -> bool | None:
        if self.volume.image is None or neighbour is None:
            return None
        disc = scheme.disc_label(neighbour) if side == "lower" else scheme.disc_label(vertebra)  # the body's other disc
        disc_values = None
        if disc in self.present and self.section(disc).mask.any():
            disc_values = self.image_patch(disc).values[self.section(disc).mask]
        section = self.section(vertebra)
        shift = int(round(6.0 / self.h))  # 6 mm more on every side than the label patch, on the same pixel grid
        rows, cols = section.mask.shape
        wider = plane.resample_grid(self.volume.image, plane.SAGITTAL, section.patch.depth, section.patch.u0 - shift * self.h,
                                    section.patch.v0 - shift * self.h, cols + 2 * shift, rows + 2 * shift, self.h,
                                    default=float("nan"), pixel_type=sitk.sitkFloat64)
        body_mask = np.zeros(wider.values.shape, dtype=bool)
        body_mask[shift:shift + section.mask.shape[0], shift:shift + section.mask.shape[1]] = section.mask
        return edges.continues_in_image(wider, quad, side, body_mask, disc_values)

    def image_patch(self, label: int) -> plane.Patch | None:
        """Grey values of the image on the sagittal patch of ``label`` (nearest neighbour, 0 outside)."""
        image = self.volume.image
        if image is None:
            return None
        if label not in self._image_patches:
            patch = self.section(label).patch
            self._image_patches[label] = plane.resample_like(image, patch, default=0, pixel_type=sitk.sitkFloat64)
        return self._image_patches[label]


def _mean_direction(vectors) -> np.ndarray:
    """Unit mean of unit vectors that point the same way (back to front)."""
    mean = np.mean(vectors, axis=0)
    return mean / np.linalg.norm(mean)
