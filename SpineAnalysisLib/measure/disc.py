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
from . import bianque, normative, pfirrmann, plane
from .landmarks import angle_between, principal_angle
from .sections import Section, Spine

#: sagittal slices thicker than this (mm) get a caution on the Pfirrmann estimate, whose thresholds come from 1 mm scans
THICK_SLICE_MM = 2.0

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
    ("pfirrmann_confidence", "ratio"),
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
    """The disc's heights, angle and landmarks (computed once per spine)."""
    cache = spine.__dict__.setdefault("_disc_geometry", {})
    if disc not in cache:
        cache[disc] = _geometry(spine, disc)
    return cache[disc]


def _geometry(spine: Spine, disc: int) -> DiscGeometry:
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
    if any(spine.shorter_than_facing(v, side) for v, side in ((upper, "lower"), (lower, "upper"))):
        # a body drawn in part next to the disc: the disc beside it is mostly drawn in part too (its outline
        # gave L5-S1 angles of -21 to +3 degrees on the shared MyoSegmenTUM scans), so no outline fallback
        return DiscGeometry(disc, upper, lower, None, None, None, None, "", why, section)
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


def _dh(section: Section, geo: DiscGeometry) -> tuple[float, str]:
    """(DH, which region it was measured on): the space between the two vertebral bodies when both endplates
    were found (:func:`.bianque.dh_between_bodies`: not changed by how thick a segmentation draws the disc),
    else the pixels labelled as disc."""
    if geo.method == "corners":
        dh = bianque.dh_between_bodies(section, geo.Da, geo.Dp, geo.upper, geo.lower)
        if dh is not None:
            return dh, normative.BETWEEN_BODIES
        dh, _ = bianque.dh_area(section, geo.Da, geo.Dp)
        return dh, "the disc mask (the bodies do not face each other across the disc)"
    dh, _ = bianque.dh_area(section, geo.Da, geo.Dp)
    return dh, "the disc mask (no bounding vertebral bodies)"


def _disc_axis_fallback(section: Section) -> np.ndarray | None:
    points = section.points()
    if len(points) < 10:
        return None
    angle = principal_angle(points, min_ratio=1.2)
    if angle is None:
        return None
    return np.array([np.cos(angle), np.sin(angle)])


def rows(spine: Spine, disc: int, sex: str | None = None, age: float | None = None, masks: str = "model") -> list[Row]:
    """(parameter, value, unit, note) rows of one disc, in contract order; z-score rows add their reference name.

    ``masks`` ("model" or "expert") selects the healthy reference of the z-scores (:mod:`.normative`)."""
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
    mask_reason = _mask_reason(section)
    mean, mean_note = _mean_height(spine, disc)
    out.append(("height_mean_mm", mean, "mm", mean_note))

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
        dh, region = _dh(section, geo)
        dh_reason = ""
    if dh is None:
        out.append(("dh_bianque", None, "mm", dh_reason))
    else:
        how = "D_a/D_p from the vertebral corners" if geo.method == "corners" else "D_a/D_p from the disc outline"
        out.append(("dh_bianque", dh, "mm", f"area of {region} in the central 80 % / W_small (0.8 x height for a rectangle); {how}"))

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

    signal, signal_reason = _t2_signal(spine, disc)
    dsi, dsi_note = _delta_si(signal, signal_reason)
    out.append(("delta_si", dsi, "", dsi_note))

    notes = {parameter: note for parameter, _, _, note in out}
    values = {"dhi": dhi, "hdr": hdr, "delta_si": dsi}
    z_rows = []
    for parameter in normative.PARAMETERS:
        if values[parameter] is None:
            z_rows.append((f"{parameter}_z", None, "z", notes[parameter]))
        elif not normative.measured_as_reference(parameter, notes["dh_bianque"]):
            z_rows.append((f"{parameter}_z", None, "z", f"no z-score: DH measured on {region}, the healthy reference measures "
                           "the disc space between the vertebral bodies"))
        else:
            z, note = normative.z_score(parameter, level, values[parameter], masks, sex, age)
            z_rows.append((f"{parameter}_z", z, "z", note, normative.reference_name(masks) if z is not None else ""))

    grade = _pfirrmann(spine, disc, signal, signal_reason, z_rows[0][1], masks)
    grade_note = grade.text
    thickness = plane.through_plane_resolution(spine.label_map, plane.SAGITTAL) if grade.grade is not None else 0.0
    if thickness > THICK_SLICE_MM:
        grade_note += (f"; this scan's sagittal slices are {thickness:.1f} mm thick, the thresholds come from 1 mm "
                       "scans: on 4 mm slab copies of the healthy shared scans the estimate read grade III for 12 of 129 discs "
                       "against 8 at 1 mm (docs/degeneration.md, \"Thick slices\")")
    out.append(("pfirrmann_estimate", grade.grade, "grade", grade_note))
    confidence_note = "how clearly the criteria fall on one side of their thresholds (not an agreement rate)"
    out.append(("pfirrmann_confidence", grade.confidence, "ratio", confidence_note if grade.grade is not None else grade.text))
    return out + z_rows


#: a case whose discs' median annulus / CSF-reference ratio reaches this is not treated as T2-weighted: on the
#: shared T2 series (Chu TSE, Menezes-Reis FSE, Siegen TSE) the per-case median is at most 0.40, on the
#: MyoSegmenTUM water-fat gradient echo at least 0.53 (Testing/DataChecks/t2_check.py)
NOT_T2_ANNULUS_RATIO = 0.5


def _not_t2_reason(spine: Spine) -> str:
    """"" when the image looks T2-weighted around the discs (dark annulus, bright CSF), else the reason."""
    cache = spine.__dict__.setdefault("_t2_reason", {})
    if "reason" not in cache:
        ratios = []
        for label in spine.discs():
            features, _ = signal_criteria(spine, label, check_t2=False)
            if features is not None:
                ratios.append(features.annulus)
        cache["reason"] = ""
        if ratios and float(np.median(ratios)) >= NOT_T2_ANNULUS_RATIO:
            cache["reason"] = (f"not a T2-weighted image? the discs' annulus is {float(np.median(ratios)):.2f} x the brightest region behind "
                               f"them (T2: below {NOT_T2_ANNULUS_RATIO}); signal measures withheld")
    return cache["reason"]


def _mask_reason(section: Section | None) -> str:
    if section is None:
        return "disc not labelled"
    if section.cut or not section.mask.any():
        return section.reason
    return ""


def _t2_signal(spine: Spine, disc: int) -> tuple[DiscSignal | None, str]:
    """The disc's signal (:func:`disc_signal`), withheld with the reason when the image does not look T2-weighted."""
    signal, reason = disc_signal(spine, disc)
    if signal is not None:
        not_t2 = _not_t2_reason(spine)
        if not_t2:
            return None, not_t2
    return signal, reason


def signal_criteria(spine: Spine, disc: int, check_t2: bool = True) -> tuple[pfirrmann.SignalFeatures | None, str]:
    """The Pfirrmann signal criteria of a disc (nucleus, annulus, contrast relative to CSF), or (None, reason)."""
    if check_t2:
        signal, reason = _t2_signal(spine, disc)
        if signal is None:
            return None, reason
    return _signal_features(spine, disc)


def _signal_features(spine: Spine, disc: int) -> tuple[pfirrmann.SignalFeatures | None, str]:
    """:func:`.pfirrmann.signal_features` of the disc's signal without the T2 check, or (None, reason); computed
    once per spine (the T2 check reads every disc's, the disc's own Pfirrmann estimate reads it again)."""
    cache = spine.__dict__.setdefault("_signal_features", {})
    if disc not in cache:
        signal, reason = disc_signal(spine, disc)
        if signal is None:
            cache[disc] = None, reason
        else:
            features = pfirrmann.signal_features(signal.values, signal.along, signal.across, float(np.median(signal.csf)))
            cache[disc] = features, "" if features is not None else "disc too small for nucleus and annulus regions"
    return cache[disc]


def _mean_height(spine: Spine, disc: int) -> tuple[float | None, str]:
    """(mean height in mm of the disc's own mask, note) or (None, reason); computed once per spine (the disc's
    row reads it, and the height ratios of its neighbours)."""
    cache = spine.__dict__.setdefault("_mean_height", {})
    if disc not in cache:
        geo = geometry(spine, disc)
        reason = _mask_reason(geo.section)
        e = None if reason else axis(geo)
        if not reason and e is None:
            e = _disc_axis_fallback(geo.section)
        if reason:
            cache[disc] = None, reason
        elif e is None:
            cache[disc] = None, "no disc axis: " + geo.note
        else:
            cache[disc] = mean_height(geo.section, e), "area of the central 80 % / its width"
    return cache[disc]


def _height_ratio(spine: Spine, disc: int) -> float | None:
    """Mean height of the disc / mean of its measured neighbouring discs' (same scan)."""
    discs = spine.discs()
    i = discs.index(disc)
    own = _mean_height(spine, disc)[0]
    neighbours = [h for h in (_mean_height(spine, d)[0] for d in discs[max(0, i - 1) : i] + discs[i + 1 : i + 2]) if h]
    if own is None or not neighbours:
        return None
    return own / float(np.mean(neighbours))


def _pfirrmann(spine: Spine, disc: int, signal: DiscSignal | None, reason: str, dhi_z: float | None, masks: str) -> pfirrmann.Estimate:
    if signal is None:
        return pfirrmann.Estimate(None, None, [reason])
    data = normative.pfirrmann_thresholds(masks)
    if data is None:
        return pfirrmann.Estimate(None, None, ["no healthy reference for the Pfirrmann criteria"])
    features, _ = _signal_features(spine, disc)
    return pfirrmann.estimate(features, pfirrmann.Thresholds.from_dict(data), dhi_z, _height_ratio(spine, disc))


@dataclass
class DiscSignal:
    """Grey values of a disc in its mid-sagittal plane and of its CSF reference (image units)."""

    values: np.ndarray  # disc pixels
    along: np.ndarray  # their position along the disc axis (mm, posterior -> anterior)
    across: np.ndarray  # perpendicular to it (mm)
    csf: np.ndarray  # CSF reference pixels
    csf_note: str
    integer: bool  # the image has an integer pixel type


def disc_signal(spine: Spine, disc: int) -> tuple[DiscSignal | None, str]:
    """The disc's and its CSF reference's grey values, or (None, reason) (computed once per spine: the T2 check
    reads every disc's, the disc's own rows read it again)."""
    cache = spine.__dict__.setdefault("_disc_signal", {})
    if disc not in cache:
        geo = geometry(spine, disc)
        cache[disc] = _disc_signal(spine, disc, geo, _mask_reason(geo.section))
    return cache[disc]


def _disc_signal(spine: Spine, disc: int, geo: DiscGeometry, mask_reason: str) -> tuple[DiscSignal | None, str]:
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
    half = (0.5 * geo.heights[1] if geo.heights else 3.0) + bianque.CSF_BEYOND_DISC_MM
    csf, note = bianque.csf_region(labels.ravel(), grey.values.ravel(), coords, geo.Dp, e, half)
    if csf is None:
        return None, note
    points = section.points() - (geo.Da + geo.Dp) / 2
    n = np.array([-e[1], e[0]])
    integer = np.issubdtype(sitk.GetArrayViewFromImage(image).dtype, np.integer)
    return DiscSignal(grey.values[section.mask], points @ e, points @ n, csf, note, bool(integer)), ""


def _delta_si(signal: DiscSignal | None, reason: str) -> tuple[float | None, str]:
    """delta SI of the disc in its mid-sagittal plane, with a note naming the CSF reference and the peaks."""
    if signal is None:
        return None, reason
    disc_values, csf, note = signal.values, signal.csf, signal.csf_note
    region = np.concatenate([disc_values, csf])
    eight_bit = signal.integer and region.min() >= 0 and region.max() <= 255
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
