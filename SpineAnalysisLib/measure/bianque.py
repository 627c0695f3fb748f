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
3. CSF reference of delta SI: ours is a band behind each disc (label 61 when present, else the brightest band
   2-35 mm behind it); theirs one CSF region segmented by their network, one mode for all five discs.
4. Ties: ours take the lowest tied grey value for both peaks and the CSF mode (``argmax``); theirs take peak1 as
   the first tied value in raster order (``Counter.most_common``), peak2 and the histogram from ``calcHist``
   (lowest tie; value 255 falls outside its range).
5. Geometry in patient millimetres in each structure's own mid-sagittal plane, not pixels of one slice.
6. Their S1 corners are ordered by w + h, which mislabels them unless S1 tilts by more than about 13 degrees;
   ours are ordered like every other body.
7. Their disc masks come from their network; ours from this project's model or the user's labels: the way a
   disc edge is drawn changes DH, HDR and delta SI (docs/degeneration.md gives the numbers).

Their ΔSI-to-Pfirrmann mapping (grade means 121.97 ... 20.60) is not used: the Pfirrmann estimate follows
Pfirrmann's own criteria (:mod:`.pfirrmann`). delta SI stays a continuous output of its own.
"""

from __future__ import annotations

import numpy as np

from .landmarks import Quad
from .sections import Section

#: how far behind the disc's posterior mid-point the CSF reference is searched (mm)
CSF_SEARCH = (2.0, 35.0)


def dh_area(section: Section, Da: np.ndarray, Dp: np.ndarray) -> tuple[float, float]:
    """(DH in mm, W_small in mm): disc area in the central 80 % between Da and Dp over the full W_small."""
    d = Da - Dp
    w_small = float(np.linalg.norm(d))
    e = d / w_small
    centre = (Da + Dp) / 2
    t = (section.points() - centre) @ e
    count = int(np.count_nonzero(np.abs(t) <= 0.4 * w_small))
    return count * section.h * section.h / w_small, w_small


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
    canal (61) within the disc's height band behind it. Otherwise the brightest band of unlabelled pixels
    2-35 mm behind Dp within +-half_height of the disc axis (on T2 the dural sac): the 1 mm slabs whose median
    grey value is at least 70 % of the brightest slab's median, contiguous with it.
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
    slab = np.floor(behind[free] - CSF_SEARCH[0]).astype(int)
    values = grey[free]
    nslab = int(slab.max()) + 1
    medians = np.full(nslab, -np.inf)
    order = np.argsort(slab, kind="stable")
    s_sorted = slab[order]
    v_sorted = values[order]
    starts = np.searchsorted(s_sorted, np.arange(nslab), side="left")
    stops = np.searchsorted(s_sorted, np.arange(nslab), side="right")
    for k in range(nslab):
        if stops[k] - starts[k] >= 3:
            medians[k] = np.median(v_sorted[starts[k] : stops[k]])
    peak = int(np.argmax(medians))
    if not np.isfinite(medians[peak]) or medians[peak] <= 0:
        return None, "no CSF-bright region found behind the disc"
    threshold = 0.7 * medians[peak]
    lo = peak
    while lo > 0 and medians[lo - 1] >= threshold:
        lo -= 1
    hi = peak
    while hi + 1 < nslab and medians[hi + 1] >= threshold:
        hi += 1
    chosen = (slab >= lo) & (slab <= hi)
    a, b = lo + CSF_SEARCH[0], hi + 1 + CSF_SEARCH[0]
    return values[chosen], f"CSF reference: brightest band {a:.0f}-{b:.0f} mm behind the disc (automatic)"
