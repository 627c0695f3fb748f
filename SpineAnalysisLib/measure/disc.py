"""Intervertebral disc geometry in the mid-sagittal plane.

Lengths in mm, angles in degrees, volume in mm^3 (patient space).

* Heights: distances between the anterior corners, the mid-points and the posterior corners of the two
  bounding endplates - the upper vertebra's inferior endplate (AI, PI) and the lower vertebra's superior
  endplate (AS, PS), corners from :mod:`.landmarks`. When a bounding vertebra is not labelled (disc-only label
  maps) or cannot be measured, the disc's own outline is used instead: lines are fitted to its upper and lower
  surfaces (the rims, ignoring central bulges into the endplate concavities) and the heights are the distances
  between these lines at 90 %, 50 % and 10 % of the disc's anterior-posterior extent (its tapered, bulging ends
  are avoided); D_a and D_p are then the mid-points of the lines' anterior and posterior ends. The ``note`` says
  which method was used.
* ``height_mean_mm``: disc area within the central 80 % of its own anterior-posterior extent (along the
  disc axis Dp -> Da) divided by that width; a rectangle of height h gives h.
* ``segmental_angle_deg``: angle between the upper vertebra's inferior and the lower vertebra's superior
  endplate, theta = atan2(u1 x u2, u1 . u2) on the posterior-to-anterior endplate vectors, positive when the disc
  opens anteriorly (lordotic disc).
* ``volume_mm3``: voxel count x voxel volume; missing when the disc touches the volume border.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .. import labels as scheme
from . import bianque, normative
from .landmarks import angle_between, principal_angle
from .sections import Section, Spine

#: (parameter, unit) of a disc, in output order.
PARAMETERS = (
    ("height_anterior_mm", "mm"),
    ("height_middle_mm", "mm"),
    ("height_posterior_mm", "mm"),
    ("height_mean_mm", "mm"),
    ("segmental_angle_deg", "deg"),
    ("volume_mm3", "mm3"),
    ("dh_bianque", "mm"),
    ("dhi", "ratio"),
    ("hdr", "ratio"),
    ("delta_si", ""),
    ("pfirrmann_estimate", "grade"),
    ("dhi_z", "z"),
    ("hdr_z", "z"),
    ("delta_si_z", "z"),
)

#: fractions of the disc's extent (posterior end = 0, anterior end = 1) where outline-based heights are taken
OUTLINE_POSITIONS = (0.9, 0.5, 0.1)


@dataclass
class DiscGeometry:
    disc: int
    upper: int
    lower: int
    heights: tuple[float, float, float] | None  # anterior, middle, posterior (mm)
    angle: float | None  # segmental angle (deg)
    Da: np.ndarray | None  # anterior disc mid-point (plane mm)
    Dp: np.ndarray | None  # posterior disc mid-point
    method: str  # "corners", "outline" or "" (not measurable)
    note: str  # method note, or the reason when not measurable
    section: Section | None  # the disc's own mid-sagittal section when it is labelled


def geometry(spine: Spine, disc: int) -> DiscGeometry:
    upper, lower = spine.disc_neighbours(disc)
    section = spine.section(disc) if disc in spine.present else None
    missing = []
    quads = {}
    for v, side in ((upper, "lower"), (lower, "upper")):  # only the two endplates facing the disc are needed
        quad, why = spine.endplate(v, side)
        if quad is None:
            missing.append(why)
        else:
            quads[v] = quad
    if not missing:
        u, l = quads[upper], quads[lower]
        heights = (
            float(np.linalg.norm(u.AI - l.AS)),
            float(np.linalg.norm(u.lower_mid - l.upper_mid)),
            float(np.linalg.norm(u.PI - l.PS)),
        )
        angle = angle_between(u.lower_direction, l.upper_direction)
        note = "between the vertebral endplate corners"
        if section is None:
            note += "; disc not labelled"
        return DiscGeometry(disc, upper, lower, heights, angle, (u.AI + l.AS) / 2, (u.PI + l.PS) / 2, "corners", note, section)
    why = "; ".join(missing)
    if section is not None and section.quad is not None:
        q = section.quad
        heights = tuple(
            float(np.linalg.norm((q.PS + f * (q.AS - q.PS)) - (q.PI + f * (q.AI - q.PI)))) for f in OUTLINE_POSITIONS
        )
        angle = angle_between(q.upper_direction, q.lower_direction)
        note = f"from the disc's own outline at 90/50/10 % of its depth ({why})"
        return DiscGeometry(
            disc, upper, lower, heights, angle, (q.AS + q.AI) / 2, (q.PS + q.PI) / 2, "outline", note, section
        )
    if section is not None:
        why = f"{section.reason}; {why}"
    return DiscGeometry(disc, upper, lower, None, None, None, None, "", why, section)


def axis(geo: DiscGeometry) -> np.ndarray | None:
    """Unit vector Dp -> Da (the disc's anterior-posterior axis)."""
    if geo.Da is None:
        return None
    d = geo.Da - geo.Dp
    n = np.linalg.norm(d)
    return d / n if n > 0 else None


def mean_height(section: Section, e: np.ndarray) -> float | None:
    """Area of the disc within the central 80 % of its extent along ``e``, divided by that width (mm)."""
    points = section.points()
    if len(points) < 10:
        return None
    t = points @ e
    lo, hi = t.min() - section.h / 2, t.max() + section.h / 2
    width = 0.8 * (hi - lo)
    middle = (lo + hi) / 2
    count = int(np.count_nonzero(np.abs(t - middle) <= width / 2))
    return count * section.h * section.h / width


Row = tuple  # (parameter, value, unit, note) or, for z-scores, (..., reference name)


def _disc_axis_fallback(section: Section) -> np.ndarray | None:
    points = section.points()
    if len(points) < 10:
        return None
    angle = principal_angle(points, min_ratio=1.2)
    if angle is None:
        return None
    return np.array([np.cos(angle), np.sin(angle)])


def rows(spine: Spine, disc: int, sex: str | None = None, age: float | None = None) -> list[Row]:
    """(parameter, value, unit, note) rows of one disc, in contract order."""
    geo = geometry(spine, disc)
    level = spine.disc_name(disc)
    section = geo.section
    out: list[Row] = []
    names = ("height_anterior_mm", "height_middle_mm", "height_posterior_mm")
    if geo.heights is None:
        out += [(name, None, "mm", geo.note) for name in names]
    else:
        out += [(name, value, "mm", geo.note) for name, value in zip(names, geo.heights)]

    # the disc's own mask is needed from here on (mean height, volume, BianqueNet)
    if section is None:
        mask_reason = "disc not labelled"
    elif section.cut:
        mask_reason = section.reason
    elif not section.mask.any():
        mask_reason = section.reason
    else:
        mask_reason = ""
    e = axis(geo)
    if not mask_reason and e is None:
        e = _disc_axis_fallback(section)
    if mask_reason:
        out.append(("height_mean_mm", None, "mm", mask_reason))
    elif e is None:
        out.append(("height_mean_mm", None, "mm", "no disc axis: " + geo.note))
    else:
        out.append(("height_mean_mm", mean_height(section, e), "mm", "area of the central 80 % / its width"))

    if geo.angle is None:
        out.append(("segmental_angle_deg", None, "deg", geo.note))
    else:
        out.append(("segmental_angle_deg", geo.angle, "deg", geo.note + "; positive = opens anteriorly"))

    if section is None:
        out.append(("volume_mm3", None, "mm3", "disc not labelled"))
    elif spine.volume.stats[disc].touches_border:
        out.append(("volume_mm3", None, "mm3", "cut by the field of view (touches the volume border)"))
    else:
        out.append(("volume_mm3", spine.volume.stats[disc].count * spine.volume.voxel_volume, "mm3", ""))

    # ----- BianqueNet -----
    dh = None
    if mask_reason:
        dh_reason = mask_reason
    elif geo.Da is None:
        dh_reason = "no disc landmarks: " + geo.note
    else:
        dh, _ = bianque.dh_area(section, geo.Da, geo.Dp)
        dh_reason = ""
    if dh is None:
        out.append(("dh_bianque", None, "mm", dh_reason))
    else:
        how = "D_a/D_p from the vertebral corners" if geo.method == "corners" else "D_a/D_p from the disc outline"
        out.append(("dh_bianque", dh, "mm", f"area of central 80 % / W_small (0.8 x height for a rectangle); {how}"))

    dhi = None
    if dh is None:
        out.append(("dhi", None, "ratio", dh_reason))
    else:
        lower_is_sacrum = geo.lower == 26
        needed = [geo.upper] if lower_is_sacrum else [geo.upper, geo.lower]
        hvs = []
        problems = []
        for v in needed:
            if v not in spine.present:
                problems.append(f"{scheme.vertebra_name(v)} not labelled")
            elif spine.body(v)[0] is None:
                problems.append(f"{scheme.vertebra_name(v)} {spine.body(v)[1]}")
            else:
                hvs.append(bianque.hv(spine.body(v)[0]))
        if problems:
            out.append(("dhi", None, "ratio", "needs the vertebral body heights: " + "; ".join(problems)))
        else:
            dhi = bianque.dhi(dh, hvs[0], hvs[1] if len(hvs) > 1 else None, lower_is_sacrum)
            if lower_is_sacrum:
                rule = "DH / HV of the upper vertebra (BianqueNet rule at L5-S1)"
            else:
                rule = "2 DH / (HV upper + HV lower)"
            out.append(("dhi", dhi, "ratio", rule))

    hdr = None
    if dh is None:
        out.append(("hdr", None, "ratio", dh_reason))
    else:
        width = bianque.w_big(section, geo.Da, geo.Dp)
        hdr = dh / width
        out.append(("hdr", hdr, "ratio", f"DH / W_big, W_big = {width:.1f} mm"))

    dsi, dsi_note = _delta_si(spine, disc, geo, mask_reason)
    out.append(("delta_si", dsi, "", dsi_note))
    if dsi is None:
        out.append(("pfirrmann_estimate", None, "grade", dsi_note))
    else:
        grade = float(bianque.pfirrmann_estimate(dsi))
        out.append(("pfirrmann_estimate", grade, "grade", "from delta SI (BianqueNet grade means)"))

    notes = {parameter: note for parameter, _, _, note in out}
    for parameter, value in (("dhi", dhi), ("hdr", hdr), ("delta_si", dsi)):
        if value is None:
            out.append((f"{parameter}_z", None, "z", notes[parameter]))
        else:
            z, note = normative.z_score(parameter, level, value, sex, age)
            out.append((f"{parameter}_z", z, "z", note, normative.REFERENCE_NAME if z is not None else ""))
    return out


def _delta_si(spine: Spine, disc: int, geo: DiscGeometry, mask_reason: str) -> tuple[float | None, str]:
    """delta SI of the disc in its mid-sagittal plane, with a note naming the CSF reference and the peaks."""
    image = spine.volume.image
    if image is None:
        return None, "no image given (label map only)"
    if mask_reason:
        return None, mask_reason
    if geo.Da is None:
        return None, "no disc landmarks: " + geo.note
    section = geo.section
    grey = spine.image_patch(disc)
    labels = section.patch.values
    nv, nu = labels.shape
    rows_, cols = np.mgrid[0:nv, 0:nu]
    coords = section.patch.coords(rows_.ravel().astype(float), cols.ravel().astype(float))
    e = axis(geo)
    half = max(0.5 * geo.heights[1], 3.0) if geo.heights else 3.0
    csf, note = bianque.csf_region(labels.ravel(), grey.values.ravel(), coords, geo.Dp, e, half)
    if csf is None:
        return None, note
    disc_values = grey.values[section.mask]
    integer = np.issubdtype(sitk.GetArrayViewFromImage(image).dtype, np.integer)
    region = np.concatenate([disc_values, csf])
    eight_bit = integer and region.min() >= 0 and region.max() <= 255
    scale = bianque.quantisation_scale(region, eight_bit)
    disc_levels = bianque.quantise(disc_values, scale)
    csf_mode = bianque.mode(bianque.quantise(csf, scale))
    peak1, peak2 = bianque.histogram_peaks(disc_levels)
    if csf_mode <= max(peak1, peak2):
        where = note.split(": ", 1)[-1]
        return None, f"the CSF reference ({where}) is not brighter than the disc: not a T2-weighted image?"
    value = bianque.delta_si(disc_levels, csf_mode)
    grey_note = "8-bit grey values" if eight_bit else f"grey values x {scale:.4g} to 0-255"
    return value, f"{note}; peaks {peak1}/{peak2}, CSF {csf_mode} ({grey_note})"

