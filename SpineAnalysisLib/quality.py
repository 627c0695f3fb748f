"""Plausibility gates and the quality status of a case: ``ok`` | ``review`` | ``failed`` with reasons.

Every check is explicit and listed here (docs/validation.md repeats them with their sources):

1. **Physical ranges** (:data:`PHYSICAL_RANGES`). A value outside the range that anatomy allows is a failed
   measurement, not a finding: :func:`withhold_implausible` empties it (value ``None``) with the reason in its note,
   together with the values derived from it (:data:`DEPENDENTS`, e.g. a withheld DHI takes its z-score along), and
   the case is ``failed``. A withheld slip is never given a Meyerding grade. A disc height outside its range also
   withholds the Genant grade of both bodies around that disc (:data:`DISC_HEIGHTS`): the endplate that bounds an
   impossible disc is misplaced, so the body's shape measured from it is not a fracture finding.
2. **Anatomical order and spacing of levels**: the centroid of each labelled vertebra must lie below the one of the
   vertebra above it (patient superior axis) and two adjacent vertebrae's centroids must be
   :data:`SPACING_MM` apart (closer is allowed next to a body cut by the field of view or labelled only in part,
   whose centroid is displaced). Outside: ``failed`` ("an S1 in the pelvis"). A level missing inside the labelled
   chain (L2 and L4 labelled, no L3; the model's own chain checks catch this before, a label map given to
   ``measure`` only here): ``review``.
3. **Label confidence** (from the labelling report in ``summary.json``): ``levels_uncertain`` true (a missing
   field counts as false) or a level-count confidence below :data:`LOW_CONFIDENCE`: ``review``. Image warnings of
   the segmentation (oblique slices, NaN voxels): ``review``. Labelling flags are listed as notes.
   Once a reader has checked (and corrected) the level names (``levels_reviewed``: when), these two labelling
   findings no longer lower the status; they are kept in ``Quality.levels_review`` ("the model said: ...") beside
   the review. Nothing else is cleared by that review: the values' own plausibility gates, the order, spacing and
   gaps of the labelled levels (measured on the segmentation as it is now), the image warnings and the slips stay.
4. **High-grade slip**: a slip of :data:`HIGH_GRADE_SLIP` % or more (Meyerding III-IV) is possible but rare and the
   commonest sign of mislabelled bodies: ``review``.

Structures cut by the field of view or incomplete at the chain ends are not errors: their affected values are
already missing with the reason in the row (:mod:`.measure.sections`, :mod:`.measure.vertebra`); they are listed
as notes, and the status stays ``ok``.

Public API: :func:`withhold_implausible` (called by :func:`SpineAnalysisLib.measurements.measure_case`, so no
caller ever sees an implausible value), :func:`assess` -> :class:`Quality`, and :data:`STATUSES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from . import labels as scheme
from .measure.sections import INCOMPLETE_NOTE
from .measure.vertebra import PARTIAL_BODY_NOTE

STATUSES = ("ok", "review", "failed")
#: the marker that starts the note of a withheld value
WITHHELD = "withheld:"
#: a level-count confidence below this is "review" (the labeller's own threshold, model/labelling.py)
LOW_CONFIDENCE = 0.6
#: slips at or above this (%) are Meyerding III or worse: possible, but a reader must confirm them
HIGH_GRADE_SLIP = 50.0


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    source: str


_SUPINE = "supine T12-S1 lordosis 36.8 ± 13.2° in 627 healthy adults (PMC6680033)"
_MEYERDING = "Meyerding 1932: grades I-IV span 0-100 % of the lower endplate"
_DISC = ("a labelled disc thinner than 1 mm is below MR resolution; the shared expert masks' 366 discs measure 2.2-20.7 mm "
         "(docs/validation.md)")
_BODY = "the shared expert masks (63 cases): body heights 14-36 mm; a grade-3 crush keeps about 40 %"

#: (structure, parameter) -> the range anatomy allows. Bounds marked "chosen here" are not published ranges but
#: far outside every published mean ± 3 SD; a value beyond them is a failed measurement.
PHYSICAL_RANGES: dict[tuple[str, str], Range] = {
    ("vertebra", "slip_percent"): Range(-50.0, 100.0, _MEYERDING + "; retrolisthesis bound -50 % chosen here"),
    ("spine", "lumbar_lordosis_deg"): Range(0.0, 90.0, _SUPINE + "; 0 is 2.8 SD below the supine mean"),
    ("spine", "sacral_slope_deg"): Range(0.0, 75.0, "standing sacral slope 40 ± 10° (Dorr, PMC7340719), smaller supine"),
    ("spine", "cobb_max_deg"): Range(0.0, 120.0, "chosen here: beyond the most severe operated scolioses"),
    ("disc", "segmental_angle_deg"): Range(-25.0, 40.0, "chosen here; the shared expert masks' 366 discs: -12 to 15°"),
    ("disc", "height_anterior_mm"): Range(1.0, 25.0, _DISC),
    ("disc", "height_middle_mm"): Range(1.0, 25.0, _DISC),
    ("disc", "height_posterior_mm"): Range(1.0, 25.0, _DISC),
    ("disc", "height_mean_mm"): Range(1.0, 25.0, _DISC),
    ("disc", "dhi"): Range(0.05, 1.0, "BianqueNet healthy DHI 0.26-0.38 (SD ≤ 0.09); 0.05 is a disc of about 1 mm"),
    ("disc", "hdr"): Range(0.03, 0.8, "BianqueNet healthy HDR 0.21-0.27 (SD ≤ 0.05)"),
    ("vertebra", "height_anterior_mm"): Range(5.0, 50.0, _BODY),
    ("vertebra", "height_middle_mm"): Range(5.0, 50.0, _BODY),
    ("vertebra", "height_posterior_mm"): Range(5.0, 50.0, _BODY),
    ("vertebra", "wedge_ratio"): Range(0.2, 2.5, "chosen here; the shared expert masks: 0.69-1.94"),
    ("vertebra", "ap_depth_mm"): Range(12.0, 70.0, "chosen here; the shared expert masks: 21-41 mm (T10-S1)"),
}

#: a value within this fraction of its range's span of a bound is on it: measurement noise on a bound is not a failed
#: measurement (a level phantom's 0 degree sacral slope measures -1e-4 to -6e-3 degrees, depending on how its corners
#: are fitted; for the sacral slope's 0-75 degrees this allows -0.075)
BOUND_TOLERANCE = 1e-3

#: parameter -> the parameters of the same structure computed from it (withheld together with it)
DEPENDENTS: dict[str, tuple[str, ...]] = {
    "height_anterior_mm": ("wedge_ratio", "genant_grade"),
    "height_middle_mm": ("biconcavity_ratio", "genant_grade"),
    "height_posterior_mm": ("wedge_ratio", "biconcavity_ratio", "genant_grade"),
    "wedge_ratio": ("genant_grade",),
    "dhi": ("dhi_z",),
    "hdr": ("hdr_z",),
    "height_mean_mm": ("dhi", "dhi_z", "hdr", "hdr_z", "dh_bianque"),
}

#: a disc height outside its range means a bounding endplate is misplaced: both bodies' Genant grades are withheld
DISC_HEIGHTS = ("height_anterior_mm", "height_middle_mm", "height_posterior_mm", "height_mean_mm")

#: adjacent vertebral centroids lie this far apart (mm). Expert masks of the shared volunteers (T10-S1, 304 pairs):
#: 26.2-42.9 mm; the bounds allow a collapsed disc and body (low) and one missed level (high: two levels ~70 mm).
SPACING_MM = (15.0, 60.0)


@dataclass
class Quality:
    status: str = "ok"
    reasons: list[str] = field(default_factory=list)  # why the status is not "ok"
    notes: list[str] = field(default_factory=list)  # information that does not lower the status
    #: ``{"reviewed_at": when, "model_said": [labelling findings]}`` once a reader reviewed the level names
    levels_review: dict | None = None

    def add(self, status: str, reason: str) -> None:
        if STATUSES.index(status) > STATUSES.index(self.status):
            self.status = status
        if reason not in self.reasons:
            self.reasons.append(reason)

    def to_dict(self) -> dict:
        result = {"status": self.status, "reasons": list(self.reasons), "notes": list(self.notes)}
        if self.levels_review is not None:
            result["levels_review"] = dict(self.levels_review)
        return result

    def banner(self) -> str:
        """One line for a report's top: 'quality: failed - reason; reason'."""
        return banner_text(self.status, self.reasons, self.levels_review)


def levels_review_text(levels_review: dict | None) -> str:
    """'levels reviewed by the reader (model said: finding; finding)' ("" when the levels were not reviewed)."""
    if not levels_review:
        return ""
    said = "; ".join(str(finding) for finding in levels_review.get("model_said") or [])
    return "levels reviewed by the reader" + (f" (model said: {said})" if said else "")


def banner_text(status: str, reasons: Iterable[str] = (), levels_review: dict | None = None) -> str:
    """'quality: STATUS — reason; reason' (also for a ``summary["quality"]`` read back from summary.json), then
    :func:`levels_review_text` when a reader reviewed the levels."""
    parts = list(reasons) + ([levels_review_text(levels_review)] if levels_review else [])
    return f"quality: {status}" + (" — " + "; ".join(parts) if parts else "")


def _fmt(value: float) -> str:
    return f"{value:.3g}"


#: note ending of a value withheld at a chain end near the image edge (labelled in part: not a failed case)
AT_EDGE = "at an end of the labelled chain near the image edge, probably labelled in part"


def withhold_implausible(measurements: list, at_edge: Iterable[str] = ()) -> list:
    """A copy of ``measurements`` in which every value outside :data:`PHYSICAL_RANGES` (and what is derived from it)
    is None, with ``"withheld: ..."`` and the reason in its note. Rows are :class:`~.measurements.Measurement`.

    ``at_edge``: levels (names) at either end of the labelled chain within reach of the image edge; their implausible
    values are withheld too, but say so (:data:`AT_EDGE`) and do not fail the case: the network often labels only
    part of the structure that the field of view cuts."""
    at_edge = set(at_edge)
    out = list(measurements)
    withheld: dict[tuple[str, str, str], str] = {}  # (structure, level, parameter) -> reason
    reasons: dict[tuple[str, str, str], str] = {}
    for m in out:
        rule = PHYSICAL_RANGES.get((m.structure, m.parameter))
        if rule is None or m.value is None:
            continue
        margin = BOUND_TOLERANCE * (rule.high - rule.low)
        if rule.low - margin <= m.value <= rule.high + margin:
            continue
        why = (f"{WITHHELD} {m.parameter} {_fmt(m.value)} {m.unit} is outside the physical range "
               f"{_fmt(rule.low)} to {_fmt(rule.high)} ({rule.source}); "
               + (f"{m.level} is {AT_EDGE}" if m.structure != "spine" and m.level in at_edge else "failed measurement"))
        reasons[(m.structure, m.level, m.parameter)] = why
        for dependent in DEPENDENTS.get(m.parameter, ()):
            withheld.setdefault((m.structure, m.level, dependent), f"{WITHHELD} derived from {m.parameter}, which is outside its physical range")
        if m.structure == "disc" and m.parameter in DISC_HEIGHTS:
            for name in m.level.split("-"):
                withheld.setdefault(("vertebra", name, "genant_grade"),
                                    f"{WITHHELD} {name}'s endplate bounds the {m.level} disc, whose {m.parameter} is outside its "
                                    "physical range: that endplate is misplaced, so the body's shape is not graded")
    reasons = {**withheld, **reasons}
    for i, m in enumerate(out):
        why = reasons.get((m.structure, m.level, m.parameter))
        if why is not None and m.value is not None:
            changes = {"value": None, "note": why}
            if getattr(m, "flag", None) is not None:
                changes["flag"] = None  # a withheld value is not flagged either
            out[i] = dataclasses.replace(m, **changes)
    return out


def _order_and_spacing(measurements: list, quality: Quality) -> None:
    centroids: dict[int, np.ndarray] = {}
    for m in measurements:
        if m.structure == "vertebra" and m.parameter.startswith("centroid_") and m.value is not None and m.label is not None:
            axis = "ras".index(m.parameter[len("centroid_")])
            centroids.setdefault(m.label, np.full(3, np.nan))[axis] = m.value
    # a body not measured whole (cut by the field of view, an incomplete chain end, labelled in part: the rows leave
    # its volume empty for exactly these) has a displaced centroid: its spacing is not judged
    partial = {m.label for m in measurements if m.structure == "vertebra" and m.parameter == "volume_mm3" and m.value is None}
    ranked = sorted((v for v, c in centroids.items() if np.isfinite(c).all()), key=scheme.anatomical_rank)
    for upper, lower in zip(ranked[:-1], ranked[1:]):
        a, b = centroids[upper], centroids[lower]
        names = f"{scheme.vertebra_name(upper)}-{scheme.vertebra_name(lower)}"
        if a[2] <= b[2]:
            quality.add("failed", f"levels out of anatomical order: {scheme.vertebra_name(lower)} is not below {scheme.vertebra_name(upper)}")
            continue
        adjacent = scheme.next_vertebra(upper) == lower or (upper, lower) in ((24, 25), (19, 28))
        distance = float(np.linalg.norm(a - b))
        if not adjacent:
            missing = _levels_between(upper, lower)
            quality.add("review", f"{', '.join(missing) or 'a level'} not labelled between {scheme.vertebra_name(upper)} and "
                                  f"{scheme.vertebra_name(lower)} ({distance:.0f} mm apart): a body missing inside the chain, "
                                  f"or levels named wrong")
            continue
        if not SPACING_MM[0] <= distance <= SPACING_MM[1] and not (distance < SPACING_MM[0] and partial & {upper, lower}):
            quality.add("failed", f"{names} centroids {distance:.0f} mm apart (adjacent vertebrae lie "
                                  f"{SPACING_MM[0]:.0f}-{SPACING_MM[1]:.0f} mm apart): levels misplaced")


def _levels_between(upper: int, lower: int) -> list[str]:
    """Names of the standard vertebrae strictly between ``upper`` and ``lower`` (cranial to caudal)."""
    names, current = [], scheme.next_vertebra(upper)
    while current is not None and current != lower and len(names) < 30:
        names.append(scheme.vertebra_name(current))
        current = scheme.next_vertebra(current)
    return names if current == lower else []


def _withheld_reason(m) -> str:
    value = m.note[len(WITHHELD):].split(" is outside", 1)[0].strip()
    return f"{m.level} {value} is outside its physical range (withheld)"


def labelling_findings(summary: dict | None) -> list[str]:
    """The model run's findings about its level names (``summary.json``): levels uncertain, low level-count
    confidence. A reader's review of the levels answers exactly these."""
    summary = summary or {}
    findings = []
    if summary.get("levels_uncertain", False):
        findings.append("levels uncertain (labelling chain checks)")
    confidence = summary.get("confidence")
    if confidence is not None and summary.get("levels") and float(confidence) < LOW_CONFIDENCE:
        findings.append(f"level count uncertain (confidence {float(confidence):.2f} < {LOW_CONFIDENCE})")
    return findings


def assess(measurements: Iterable, summary: dict | None = None, levels_reviewed: str | None = None) -> Quality:
    """The quality status of one case from its (already gated) measurement rows and, when it was segmented here,
    its ``summary.json`` content (labelling report: ``confidence``, ``levels_uncertain``, ``flags``, ``warnings``).

    ``levels_reviewed``: when a reader reviewed the level names (None: not reviewed); the labelling findings then
    go to ``levels_review`` instead of lowering the status (item 3 of the module docstring)."""
    measurements = list(measurements)
    quality = Quality()
    summary = summary or {}
    if summary and not summary.get("levels"):
        quality.add("failed", "no vertebra or disc was labelled")
    elif not any(m.structure == "vertebra" or m.structure == "disc" for m in measurements):
        quality.add("failed", "nothing could be measured")
    for m in measurements:
        if m.value is None and m.note.startswith(WITHHELD) and m.note.endswith(AT_EDGE):
            quality.notes.append(f"{_withheld_reason(m)}; {AT_EDGE}")
        elif m.value is None and m.note.startswith(WITHHELD) and " is outside the physical range" in m.note:
            quality.add("failed", _withheld_reason(m))
        elif m.parameter == "slip_percent" and m.value is not None and m.value >= HIGH_GRADE_SLIP:
            quality.add("review", f"{m.level} slip {m.value:.0f} % (Meyerding III or worse): confirm on the image")
        elif INCOMPLETE_NOTE in m.note and m.parameter == "genant_grade":
            quality.notes.append(f"{m.level}: {m.note}")
        elif m.parameter == "genant_grade" and m.value is None and m.note.startswith(PARTIAL_BODY_NOTE):
            quality.add("review", f"{m.level} seems labelled in part (its Genant grade is withheld): check its outline")
    _order_and_spacing(measurements, quality)
    findings = labelling_findings(summary)
    if levels_reviewed:
        quality.levels_review = {"reviewed_at": str(levels_reviewed), "model_said": findings}
    else:
        for finding in findings:
            quality.add("review", finding)
    for warning in summary.get("warnings", []) or []:
        quality.add("review", str(warning))
    quality.notes.extend(str(flag) for flag in summary.get("flags", []) or [])
    return quality
