"""BianqueNet disc parameters and disc signal intensity, in this project's own conventions.

Definitions follow Zheng et al., "Deep learning-based high-accuracy quantitation for lumbar intervertebral
disc degeneration from MRI", Nat Commun 13:841 (2022), doi 10.1038/s41467-022-28387-5, and their code
(github.com/no-saint-no-angel/BianqueNet, ``function/calcu_DHI_512.py``, ``calcu_signal_strength.py``). They
work on one 512 x 512 mid-sagittal T2 slice in pixels; here the same formulas are applied in each disc's own
mid-sagittal plane in patient millimetres, so DH is in mm while DHI, HDR and delta SI are dimensionless ratios.

* Landmarks: the four corners of each vertebral body; D_a = mid-point of the upper body's anterior-inferior
  and the lower body's anterior-superior corner, D_p the same posteriorly; W_small = |D_p - D_a|.
* ``dh_bianque`` (mm): disc area between the two lines perpendicular to D_a -> D_p at +-40 % of W_small from the
  disc centre (the central 80 %), divided by the *full* W_small: a rectangular disc of height h gives 0.8 h.
  Here the area is that of the disc *space* between the two vertebral bodies (:func:`dh_between_bodies`) when
  both are labelled, else of the drawn disc (convention 8 below).
* HV (mm) of a vertebra = body area in the plane / mean of its superior and inferior endplate widths.
* ``dhi`` = 2 DH / (HV_upper + HV_lower); at L5-S1 (lower vertebra S1) DH / HV_L5, as in their code.
* ``hdr`` (their DWR) = DH / W_big, W_big = extent of the disc mask along the D_a-D_p line, walking outward
  from D_a and from D_p until the mask ends (includes bulging).
* ``delta_si``: on grey values quantised to 0-255 (8-bit images as they are; other images scaled by 255 over
  the 99.5th percentile of the disc and CSF search region, which leaves the ratio unchanged): peak1 = most
  frequent disc value, peak2 = the value k maximising |k - 0.95 peak1| * count(k); delta SI = |peak1 - peak2| *
  255 / (most frequent value of a CSF reference region).

**Conventions kept apart from theirs** (so the values are *not* comparable with their published tables, and the
project never compares them: z-scores use its own healthy reference, :mod:`.normative`):

1. Corners: ours are the mask's own corners (:mod:`.landmarks`); their ``goodFeaturesToTrack`` corners sit about
   3 pixels inside the mask corners, which makes their HV 8-17 % larger and their DHI about as much smaller.
2. W_big: ours runs edge to edge (outermost pixel centres plus one pixel); theirs between the centres of the
   outermost pixels, with the row index truncated on sloped lines (about one pixel shorter).
3. CSF reference of delta SI: ours is a band behind each disc (label 61 when present, else the brightest 10 % of
   the unlabelled region 2-35 mm behind it, from 12 mm above to 12 mm below the disc); theirs one CSF region
   segmented by their network, one mode for all five discs.
4. Ties: ours take the lowest tied grey value for both peaks and the CSF mode (``argmax``); theirs take peak1 as
   the first tied value in raster order (``Counter.most_common``), peak2 and the histogram from ``calcHist``
   (lowest tie; value 255 falls outside its range).
5. Geometry in patient millimetres in each structure's own mid-sagittal plane, not pixels of one slice.
6. Their S1 corners are ordered by w + h, which mislabels them unless S1 tilts by more than about 13 degrees;
   ours are ordered like every other body.
7. Their disc masks come from their network; ours from this project's model or the user's labels: the way a
   disc edge is drawn changes HDR's W_big and delta SI (docs/degeneration.md gives the numbers).
8. DH region: theirs the pixels their network draws as disc; ours the space between the two bodies' facing
   outlines (each 1-pixel strip at most ``DISC_EDGE_TOLERANCE_MM`` beyond either edge of the drawn disc), because
   the shipped model draws the discs of unseen scans 12-30 % thinner than that space, varying from scan to scan,
   while its body outlines agree with the experts' (docs/degeneration.md, "Disc height on scans the model has
   not seen"). Where a bounding body is missing DH falls back to the drawn disc and gets no z-score.

Their ΔSI-to-Pfirrmann mapping (grade means 121.97 ... 20.60) is not used: the Pfirrmann estimate follows
Pfirrmann's own criteria (:mod:`.pfirrmann`). delta SI stays a continuous output of its own.
"""

from __future__ import annotations

import numpy as np

from .landmarks import Quad
from .sections import Section

#: how far behind the disc's posterior mid-point the CSF reference is searched (mm)
CSF_SEARCH = (2.0, 35.0)
#: the CSF reference is the brightest this many percent of the unlabelled search region: the fluid is the
#: brightest tissue there on T2, its extent varies (a canal narrowed to 2 mm, a canal tilted against the disc
#: axis), its signal does not; 10 % of the region is about a 3 mm wide strip of canal over the band's height
CSF_TOP_PERCENT = 10.0
#: the CSF band reaches this far above and below the disc (mm): the dural sac behind the adjacent vertebral
#: bodies, not only at the disc level, where bulging discs and ligamenta flava narrow the canal (degenerative
#: stenosis) and a band as tall as the disc can hold too little CSF to find (docs/degeneration.md, audit)
CSF_BEYOND_DISC_MM = 12.0


def dh_area(section: Section, Da: np.ndarray, Dp: np.ndarray) -> tuple[float, float]:
    """(DH in mm, W_small in mm): disc area in the central 80 % between Da and Dp over the full W_small."""
    d = Da - Dp
    w_small = float(np.linalg.norm(d))
    e = d / w_small
    centre = (Da + Dp) / 2
    t = (section.points() - centre) @ e
    count = int(np.count_nonzero(np.abs(t) <= 0.4 * w_small))
    return count * section.h * section.h / w_small, w_small


#: the space between the bodies must be measurable over at least this fraction of the central 80 %
MIN_GAP_COVERAGE = 0.8
#: in each strip the space between the bodies counts at most this much (mm) beyond each edge of the drawn
#: disc: the model's disc outline sits on average 0.7 mm inside each endplate (healthy volunteers, SD of the
#: total 1.0 mm), so a larger gap means a body outline that stops short of its endplate (e.g. a partly drawn
#: S1 at the edge of the field of view), not disc
DISC_EDGE_TOLERANCE_MM = 2.0


def dh_between_bodies(section: Section, Da: np.ndarray, Dp: np.ndarray, upper: int, lower: int) -> float | None:
    """DH (mm) of the disc *space*: the area between the two vertebral bodies in the central 80 % / W_small.

    The same band as :func:`dh_area`, but the region is everything between the upper body's inferior and the
    lower body's superior outline (labels ``upper``/``lower`` on the disc's mid-sagittal patch), measured in
    pixel-wide strips perpendicular to D_a -> D_p, instead of the pixels drawn as disc. The bodies' outlines are
    drawn alike by experts and by the model on scans it has not seen; the disc's own outline is not (see
    docs/degeneration.md: the model's disc masks are 12 % thinner than the space between its bodies on its
    training cases and 12-30 % on validation cases). A rectangle of height h between flat bodies gives 0.8 h,
    like :func:`dh_area`. Per strip the space counts at most ``DISC_EDGE_TOLERANCE_MM`` beyond either edge of the
    drawn disc. None when the bodies do not face each other across the disc over ``MIN_GAP_COVERAGE`` of the band.
    """
    d = Da - Dp
    w_small = float(np.linalg.norm(d))
    if w_small <= 0:
        return None
    e = d / w_small
    n = np.array([-e[1], e[0]])
    centre = (Da + Dp) / 2
    h = section.h
    labels = section.patch.values
    rel = {}
    for name, mask in (("upper", labels == upper), ("lower", labels == lower), ("disc", section.mask)):
        p = section.patch.points(mask) - centre
        rel[name] = (p @ e, p @ n)
    if len(rel["upper"][0]) == 0 or len(rel["lower"][0]) == 0:
        return None
    sign = 1.0 if np.median(rel["upper"][1]) > np.median(rel["lower"][1]) else -1.0
    edges = np.arange(-0.4 * w_small, 0.4 * w_small + 1e-9, h)
    (ut, un), (lt, ln), (dt, dn) = rel["upper"], rel["lower"], rel["disc"]
    gaps = []
    for a, b in zip(edges[:-1], edges[1:]):
        u = sign * un[(ut >= a) & (ut < b) & (sign * un > 0)]
        low = sign * ln[(lt >= a) & (lt < b) & (sign * ln < 0)]
        disc = dn[(dt >= a) & (dt < b)]
        if len(u) and len(low) and len(disc):
            drawn = float(disc.max() - disc.min()) + h
            gaps.append(min(max(float(u.min() - low.max()) - h, 0.0), drawn + 2 * DISC_EDGE_TOLERANCE_MM))
    if len(gaps) < MIN_GAP_COVERAGE * (len(edges) - 1):
        return None
    return 0.8 * float(np.mean(gaps))


def w_big(section: Section, Da: np.ndarray, Dp: np.ndarray, max_mm: float = 80.0) -> float:
    """Extent (mm) of the disc mask along the Da-Dp line, walking outward from Da and from Dp."""
    e = (Da - Dp) / np.linalg.norm(Da - Dp)
    step = section.h / 2
    ts = np.arange(0.0, max_mm, step)
    mask = section.mask
    patch = section.patch

    def inside(points):
        cols = np.rint((points[:, 0] - patch.u0) / patch.h).astype(int)
        rows = np.rint((points[:, 1] - patch.v0) / patch.h).astype(int)
        ok = (rows >= 0) & (rows < mask.shape[0]) & (cols >= 0) & (cols < mask.shape[1])
        result = np.zeros(len(points), dtype=bool)
        result[ok] = mask[rows[ok], cols[ok]]
        return result

    ends = []
    for start, direction in ((Da, e), (Dp, -e)):
        flags = inside(start + ts[:, None] * direction)
        stop = int(np.argmin(flags)) if not flags.all() else len(flags)
        ends.append(start + (ts[stop - 1] if stop > 0 else 0.0) * direction)
    return float(np.linalg.norm(ends[0] - ends[1])) + section.h


def hv(quad: Quad) -> float:
    """BianqueNet vertebral height (mm): body area / mean of its superior and inferior endplate widths."""
    return quad.area / ((quad.upper_width + quad.lower_width) / 2)


def dhi(dh: float, hv_upper: float, hv_lower: float | None, lower_is_sacrum: bool) -> float:
    """2 DH / (HV_upper + HV_lower); DH / HV_upper when the lower vertebra is the sacrum (their L5-S1 rule)."""
    if lower_is_sacrum:
        return dh / hv_upper
    return 2 * dh / (hv_upper + hv_lower)


# ----- signal intensity -----
def quantisation_scale(image_values: np.ndarray, pixel_is_8bit: bool) -> float:
    """Factor to 0-255 grey levels: 1 for 8-bit data, else 255 / 99.5th percentile of ``image_values``."""
    if pixel_is_8bit:
        return 1.0
    top = float(np.percentile(image_values, 99.5)) if image_values.size else 0.0
    return 255.0 / top if top > 0 else 1.0


def quantise(values: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.rint(np.asarray(values, dtype=float) * scale), 0, 255).astype(np.int64)


def histogram_peaks(levels: np.ndarray) -> tuple[int, int]:
    """(peak1, peak2) of 0-255 grey levels: the mode, and argmax_k |k - 0.95 peak1| * count(k)."""
    hist = np.bincount(np.asarray(levels, dtype=np.int64), minlength=256)[:256].astype(float)
    peak1 = int(np.argmax(hist))
    measure = np.abs(np.arange(256) - 0.95 * peak1) * hist
    peak2 = int(np.argmax(measure))
    return peak1, peak2


def mode(levels: np.ndarray) -> int:
    return int(np.argmax(np.bincount(np.asarray(levels, dtype=np.int64), minlength=256)))


def delta_si(disc_levels: np.ndarray, csf_mode: int) -> float | None:
    """|peak1 - peak2| * 255 / csf_mode on 0-255 grey levels (None when the CSF mode is 0)."""
    if csf_mode <= 0 or len(disc_levels) == 0:
        return None
    peak1, peak2 = histogram_peaks(disc_levels)
    return abs(peak1 - peak2) * 255.0 / csf_mode


def csf_region(
    labels: np.ndarray,
    grey: np.ndarray,
    coords: np.ndarray,
    Dp: np.ndarray,
    e: np.ndarray,
    half_height: float,
    canal_label: int = 61,
) -> tuple[np.ndarray | None, str]:
    """Grey values of a CSF reference region behind the disc and a note saying which region was used.

    ``labels``/``grey`` are flat patch values, ``coords`` their plane coordinates; ``e`` is the disc axis
    (posterior -> anterior) and ``Dp`` the disc's posterior mid-point. Preference: pixels labelled as spinal
    canal (61) within the band behind it. Otherwise the brightest ``CSF_TOP_PERCENT`` of the unlabelled pixels
    2-35 mm behind Dp within +-half_height of the disc axis (on T2 the dural sac). ``half_height`` is the disc's
    half height plus ``CSF_BEYOND_DISC_MM`` in :mod:`.disc`, so the canal behind the adjacent bodies counts too.

    (Until 2026-12-06 the region was the brightest contiguous run of 1 mm slabs at the disc level, by slab
    median: on the Siegen spondylolisthesis case VB1_15 it missed a canal narrowed to about 2 mm at L2-L3 and
    took 53 against 136-151 at the other levels; across the shared T2 cases the per-case spread of the CSF value
    over L1-S1 fell from a worst coefficient of variation of 0.33 to 0.17. docs/degeneration.md.)
    """
    n = np.array([-e[1], e[0]])
    d = coords - Dp
    behind = -(d @ e)  # mm behind Dp
    across = np.abs(d @ n)
    band = (across <= half_height) & (behind >= CSF_SEARCH[0]) & (behind <= CSF_SEARCH[1])
    canal = band & (labels == canal_label)
    if np.count_nonzero(canal) >= 10:
        return grey[canal], "CSF reference: label 61 (spinal canal) behind the disc"
    free = band & (labels == 0)
    if np.count_nonzero(free) < 10:
        return None, "no unlabelled region behind the disc to find a CSF reference in"
    values = grey[free]
    top = values[values >= np.percentile(values, 100 - CSF_TOP_PERCENT)]
    if top.size == 0 or np.median(top) <= 0:
        return None, "no CSF-bright region found behind the disc"
    return top, f"CSF reference: brightest {CSF_TOP_PERCENT:.0f} % of the canal region behind the disc (automatic)"
