"""Pfirrmann grade *estimate* of a lumbar disc from the criteria of Pfirrmann et al.

Source of the grades: Pfirrmann CWA, Metzdorf A, Zanetti M, Hodler J, Boos N. "Magnetic resonance
classification of lumbar intervertebral disc degeneration." Spine 2001;26:1873-1878 (Table 1 and the
algorithm of their Fig. 1), on T2-weighted mid-sagittal images:

===== =========================== ================================ ============================ ======================
grade structure                   nucleus-annulus distinction      signal intensity             disc height
===== =========================== ================================ ============================ ======================
I     homogeneous, bright white   clear                            hyperintense, = CSF          normal
II    inhomogeneous (+/- bands)   clear                            hyperintense, = CSF          normal
III   inhomogeneous, grey         unclear                          intermediate                 normal to slightly down
IV    inhomogeneous, grey-black   lost                             intermediate to hypointense  normal to moderately down
V     inhomogeneous, black        lost                             hypointense                  collapsed
===== =========================== ================================ ============================ ======================

How each criterion is measured here (all in the disc's own mid-sagittal plane, grey values divided by the CSF
reference of :func:`.bianque.csf_region`, so they are "relative to CSF" as Pfirrmann's wording is):

* **nucleus signal** ``nucleus`` = 75th percentile of the grey values of the nucleus region (``NUCLEUS_PERCENTILE``:
  the bright tissue beside a grade II intranuclear band, less pulled down by pixels blurred with the endplates of
  a thin disc; until 2026-12-06 the median) (disc pixels in the central 40 % of
  the disc's anterior-posterior extent and the central half of its local height) / CSF;
* **nucleus-annulus distinction** ``contrast`` = (nucleus signal - annulus median) / CSF, the annulus region
  being the outer 12 % of the extent at both ends;
* **structure** ``inhomogeneity`` = interquartile range of the nucleus / its median (separates I from II only);
* **height**: the disc's DHI z-score against the project's healthy reference (:mod:`.normative`) and its mean
  height relative to the mean of its measured neighbouring discs in the same scan.

Thresholds - none is given numerically by Pfirrmann; each one is tied to a stated reference:

* ``bright``: a nucleus is "hyperintense, isointense to CSF" (I-II) when ``nucleus`` is at least the 2.5th
  percentile of healthy discs' nuclei (the project's healthy T2 reference, ``reference_healthy.json`` ->
  ``pfirrmann``; the same 2.5th percentile as the flag rule of :mod:`.flags`);
* ``clear``: the distinction is clear when ``contrast`` is at least the 2.5th percentile of healthy discs;
* ``dark``: a nucleus is "hypointense / black" when ``nucleus`` is not brighter than the median *annulus* of
  healthy discs - the tissue that is black on T2 in Pfirrmann's figures - capped at half the ``bright`` limit
  (where the healthy annulus region is not dark, e.g. the disc space between expert vertebral outlines);
* between ``dark`` and ``bright`` the nucleus is grey: in the upper half "intermediate" (III, or IV when the
  distinction is lost, contrast <= 0), in the lower half "intermediate to hypointense" (IV);
* ``homogeneous`` (I rather than II): inhomogeneity below the healthy median;
* height: "normal" unless flagged low by :mod:`.flags` (DHI z < -1.96): a bright disc with a low height cannot
  be I-II and is III. "Collapsed" when the disc's mean height is below 50 % of its neighbours' mean or its DHI z
  is below -3.29 (0.05th percentile of the healthy reference); the 50 % is this project's reading of
  "collapsed", not a published number. A collapsed disc is V when its nucleus is black or in the lower grey half
  (grade V shows mainly as lost height), IV when it is in the upper grey half, III when it is bright.

Confidence: the distance of the deciding feature(s) from their threshold in units of the healthy spread of that
feature, mapped through the normal CDF (0.5 = on the threshold, about 1 = far from it). It says how clearly the
measured values fall on one side, not how often the estimate agrees with radiologists.

Limits: an estimate, not validated against graded images (no graded set with a usable licence is available to
the project); thresholds come from a small healthy T2 set (see docs/degeneration.md); needs a T2-weighted image
with a CSF reference; grades I and II are separated only by the homogeneity measure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import flags

#: fractions of the disc's anterior-posterior extent: nucleus window and annulus ends
NUCLEUS_WINDOW = (0.3, 0.7)
ANNULUS_END = 0.12
#: the nucleus keeps the central half of the disc's local height
NUCLEUS_HEIGHT_FRACTION = 0.5
#: the nucleus signal is this percentile of the nucleus region, not its median: a grade II nucleus is bright
#: *besides* its dark horizontal band (intranuclear cleft), and on 1 mm pixels the central half of a thin disc
#: also holds pixels blurred with the dark endplates; both pull a median down into "grey"
NUCLEUS_PERCENTILE = 75.0
#: a disc is "collapsed" below this fraction of its neighbours' mean height (project's reading of Pfirrmann V)
COLLAPSED_HEIGHT_RATIO = 0.5
#: ... or below this DHI z-score (0.05th percentile of the healthy reference)
COLLAPSED_Z = -3.29
ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V"}


@dataclass
class SignalFeatures:
    nucleus: float  # nucleus median / CSF
    annulus: float  # annulus median / CSF
    contrast: float  # nucleus - annulus, in CSF units
    inhomogeneity: float  # IQR / median of the nucleus
    n_nucleus: int
    n_annulus: int


@dataclass
class Thresholds:
    """Healthy-reference statistics the rule needs (see the module docstring)."""

    nucleus_p2_5: float
    nucleus_sd: float
    contrast_p2_5: float
    contrast_sd: float
    annulus_median: float
    inhomogeneity_median: float
    inhomogeneity_sd: float
    source: str = ""

    @property
    def dark(self) -> float:
        """Upper limit of a "black" (hypointense) nucleus: the healthy annulus level, at most half the bright limit."""
        return min(self.annulus_median, 0.5 * self.nucleus_p2_5)

    @classmethod
    def from_dict(cls, data: dict) -> "Thresholds":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class Estimate:
    grade: int | None
    confidence: float | None
    criteria: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        if self.grade is None:
            return "; ".join(self.criteria)
        return f"Pfirrmann {ROMAN[self.grade]} (estimate, confidence {self.confidence:.2f}): " + "; ".join(self.criteria)


def regions(values: np.ndarray, along: np.ndarray, across: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nucleus values, annulus values) of one disc's pixels.

    ``along``: position of each pixel along the disc axis (mm, posterior -> anterior), ``across``: perpendicular
    to it (mm). The extent is normalised to [0, 1]; the local height is taken in 1 mm bins along the axis.
    """
    lo, hi = float(along.min()), float(along.max())
    if hi - lo <= 0:
        return values[:0], values[:0]
    u = (along - lo) / (hi - lo)
    annulus = values[(u <= ANNULUS_END) | (u >= 1 - ANNULUS_END)]
    window = (u >= NUCLEUS_WINDOW[0]) & (u <= NUCLEUS_WINDOW[1])
    bins = np.floor(along - lo).astype(int)
    keep = np.zeros(len(values), dtype=bool)
    for b in np.unique(bins[window]):
        in_bin = window & (bins == b)
        top, bottom = across[in_bin].max(), across[in_bin].min()
        middle, half = (top + bottom) / 2, (top - bottom) / 2 * NUCLEUS_HEIGHT_FRACTION
        keep |= in_bin & (np.abs(across - middle) <= half)
    return values[keep], annulus


def signal_features(values: np.ndarray, along: np.ndarray, across: np.ndarray, csf: float) -> SignalFeatures | None:
    """Nucleus / annulus measures relative to the CSF grey value ``csf`` (None when a region is too small)."""
    if csf <= 0 or len(values) < 20:
        return None
    nucleus, annulus = regions(np.asarray(values, float), np.asarray(along, float), np.asarray(across, float))
    if len(nucleus) < 5 or len(annulus) < 5:
        return None
    n_median = float(np.median(nucleus))
    a_median = float(np.median(annulus))
    q75, q25 = np.percentile(nucleus, [75, 25])
    inhomogeneity = float((q75 - q25) / n_median) if n_median > 0 else float("inf")
    n_signal = float(np.percentile(nucleus, NUCLEUS_PERCENTILE))
    return SignalFeatures(n_signal / csf, a_median / csf, (n_signal - a_median) / csf, inhomogeneity, len(nucleus), len(annulus))


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _margin(value: float, threshold: float, sd: float) -> float:
    return _phi(abs(value - threshold) / sd) if sd > 0 else 1.0


def estimate(
    features: SignalFeatures | None,
    thresholds: Thresholds,
    height_z: float | None = None,
    height_ratio: float | None = None,
) -> Estimate:
    """The Pfirrmann estimate from the measured criteria (see the module docstring for the rule).

    ``height_z``: the disc's DHI z-score against the healthy reference (None when unknown);
    ``height_ratio``: its mean height / the mean of its measured neighbours' (None when it has none).
    """
    if features is None:
        return Estimate(None, None, ["no nucleus/annulus signal measured"])
    t = thresholds
    s, c = features.nucleus, features.contrast
    low_height = flags.outside_normal(height_z, "dhi_z") is True
    collapsed_by = []
    if height_ratio is not None and height_ratio < COLLAPSED_HEIGHT_RATIO:
        collapsed_by.append(f"height {100 * height_ratio:.0f} % of its neighbours' (< {100 * COLLAPSED_HEIGHT_RATIO:.0f} %)")
    if height_z is not None and height_z < COLLAPSED_Z:
        collapsed_by.append(f"DHI z {height_z:+.1f} (< {COLLAPSED_Z})")
    signal = f"nucleus {s:.2f} x CSF"
    distinction = f"nucleus-annulus contrast {c:+.2f} x CSF"
    dark_limit, middle = t.dark, (t.dark + t.nucleus_p2_5) / 2
    collapsed = "collapsed: " + "; ".join(collapsed_by) if collapsed_by else ""

    if s >= t.nucleus_p2_5:
        bright = f"bright: {signal} (>= healthy 2.5th percentile {t.nucleus_p2_5:.2f})"
        margin = _margin(s, t.nucleus_p2_5, t.nucleus_sd)
        if c < t.contrast_p2_5:
            return Estimate(3, _margin(c, t.contrast_p2_5, t.contrast_sd), [bright, f"but unclear distinction: {distinction} (< {t.contrast_p2_5:.2f})"])
        criteria = [bright, f"clear distinction: {distinction} (>= {t.contrast_p2_5:.2f})"]
        margin = min(margin, _margin(c, t.contrast_p2_5, t.contrast_sd))
        if low_height or collapsed_by:
            why = collapsed or f"DHI z {height_z:+.1f} < -1.96"
            return Estimate(3, margin, criteria + [f"but height decreased ({why}): not I-II"])
        homogeneous = features.inhomogeneity < t.inhomogeneity_median
        criteria.append(("homogeneous" if homogeneous else "inhomogeneous") + f" (IQR/median {features.inhomogeneity:.2f}, healthy median {t.inhomogeneity_median:.2f})")
        criteria.append("height normal" if height_z is not None else "height not compared (no DHI z)")
        margin = min(margin, _margin(features.inhomogeneity, t.inhomogeneity_median, t.inhomogeneity_sd))
        return Estimate(1 if homogeneous else 2, margin, criteria)
    if s > middle:
        grey = f"grey: {signal} (upper half between black {dark_limit:.2f} and bright {t.nucleus_p2_5:.2f}): intermediate"
        margin = min(_margin(s, t.nucleus_p2_5, t.nucleus_sd), _margin(s, middle, t.nucleus_sd))
        if collapsed:
            return Estimate(4, margin, [grey, collapsed + ", but not black: IV"])
        if c <= 0:
            return Estimate(4, margin, [grey, f"distinction lost ({distinction})"])
        return Estimate(3, margin, [grey, f"distinction unclear ({distinction})"])
    if s > dark_limit:
        shade = f"grey to black: {signal} (lower half between black {dark_limit:.2f} and bright {t.nucleus_p2_5:.2f}): intermediate to hypointense"
        margin = min(_margin(s, middle, t.nucleus_sd), _margin(s, dark_limit, t.nucleus_sd))
    else:
        shade = f"black: {signal} (<= {dark_limit:.2f}): hypointense"
        margin = _margin(s, dark_limit, t.nucleus_sd)
    criteria = [shade, f"distinction lost ({distinction})" if c < t.contrast_p2_5 else distinction]
    if collapsed:
        return Estimate(5, margin, criteria + [collapsed])
    return Estimate(4, margin, criteria + ["not collapsed"])
