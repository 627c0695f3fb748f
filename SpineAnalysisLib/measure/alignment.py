"""Spinal alignment: lumbar lordosis, sacral slope and the largest coronal Cobb angle (degrees).

Endplate directions are the endplates' own line fits (:attr:`.landmarks.Quad.upper_direction`,
:data:`.sections.ANGLE_PLATE_TRIM`; each vertebra in its own mid-sagittal or mid-coronal plane; an endplate is used when its own two corners are intact, also when the field of view cuts the
vertebra's other end, and never the free end of an incomplete chain-end vertebra; all these planes are parallel, so their 2D directions are directly comparable). Angles
between endplates: theta = atan2(u1 x u2, u1 . u2).

* ``lumbar_lordosis_deg``: L1 superior endplate to S1 superior endplate (level "L1-S1"); when S1 is not in view
  or cannot be measured, L1 superior to the lowest lumbar vertebra's inferior endplate ("L1-L5"). Positive =
  lordosis (endplates converging posteriorly). Supine MRI values are smaller than standing radiograph values.
* ``sacral_slope_deg``: S1 superior endplate against the patient anterior-posterior axis (the table's AP axis on
  a supine scan), positive when its anterior end is lower (the usual sense).
* ``cobb_max_deg``: the largest angle between any two endplates (superior or inferior) of two different
  labelled vertebrae, each measured in the vertebra's mid-coronal plane; 0 for a straight spine. Of S1 only the
  superior endplate is used (the S1 label ends inside the sacrum).
"""

from __future__ import annotations

from .. import labels as scheme
from . import plane
from .landmarks import angle_between, angle_of
from .sections import Spine

Row = tuple[str, str, "float | None", str, str]  # level, parameter, value, unit, note

#: (parameter, unit) of the spine rows, in output order.
PARAMETERS = (("lumbar_lordosis_deg", "deg"), ("sacral_slope_deg", "deg"), ("cobb_max_deg", "deg"))


def lordosis_reference(spine: Spine) -> tuple[str, tuple[int, str] | None, str]:
    """(level, the (vertebra, side) of the endplate L1's superior endplate is measured against, how), that endplate
    being S1's superior one, else the lowest lumbar vertebra's inferior one; None, with why neither is measurable."""
    s1, why_s1 = spine.endplate(26, "upper")
    if s1 is not None:
        return "L1-S1", (26, "upper"), "L1 superior to S1 superior endplate"
    lowest = 25 if 25 in spine.present else 24
    name = scheme.vertebra_name(lowest)
    l5, why_l5 = spine.endplate(lowest, "lower")
    if l5 is None:
        return f"L1-{name}", None, "; ".join(x for x in (why_s1, why_l5) if x)
    return f"L1-{name}", (lowest, "lower"), f"L1 superior to {name} inferior endplate ({why_s1 if 26 in spine.present else 'S1 not in view'})"


def lordosis(spine: Spine) -> Row:
    top, why_top = spine.endplate(20, "upper")
    level, reference, how = lordosis_reference(spine)
    if reference is None:
        return (level, "lumbar_lordosis_deg", None, "deg", "; ".join(x for x in (why_top, how) if x))
    if top is None:
        return (level, "lumbar_lordosis_deg", None, "deg", why_top)
    quad, _ = spine.endplate(*reference)
    direction = quad.upper_direction if reference[1] == "upper" else quad.lower_direction
    value = angle_between(top.upper_direction, direction)
    return (level, "lumbar_lordosis_deg", value, "deg", how + "; positive = lordosis")


def sacral_slope(spine: Spine) -> Row:
    s1, why = spine.endplate(26, "upper")
    if s1 is None:
        return ("S1", "sacral_slope_deg", None, "deg", why if 26 in spine.present else "S1 not in view")
    return ("S1", "sacral_slope_deg", -angle_of(s1.upper_direction), "deg", "S1 superior endplate vs patient AP axis")


def _span(names: list[str]) -> str:
    """The level name of a row about the vertebrae ``names`` (in order): "L1-L5", one name alone ("L5", not "L5-L5")."""
    if not names:
        return ""
    return names[0] if len(names) == 1 else f"{names[0]}-{names[-1]}"


def cobb_endplates(spine: Spine) -> tuple[float | None, tuple | None, tuple | None, list[int], list[str]]:
    """(largest Cobb angle, (vertebra, "upper"/"lower") of its upper endplate, the same of its lower one, the vertebrae
    measurable in their mid-coronal planes, why the others' endplates were not); the angle is None with fewer than
    two measurable vertebrae, both endplates None when all are parallel."""
    tilts = []  # (angle, vertebra, "upper"/"lower")
    skipped = []
    measured = []
    for v in spine.vertebrae:
        found = False
        for side in ("upper", "lower"):
            if v == 26 and side == "lower":
                continue  # the sacrum's S1 label ends inside the sacrum: only its superior endplate belongs to a curve
            quad, why = spine.endplate(v, side, plane.CORONAL)
            if quad is None:
                skipped.append(why)
                continue
            found = True
            direction = quad.upper_direction if side == "upper" else quad.lower_direction
            tilts.append((angle_of(direction), v, side))
        if found:
            measured.append(v)
    if len(measured) < 2:
        return None, None, None, measured, skipped
    best = (0.0, None, None)
    for i, a in enumerate(tilts):
        for b in tilts[i + 1 :]:
            if a[1] == b[1]:
                continue
            d = abs(a[0] - b[0])
            if d > best[0]:
                best = (d, a, b)
    value, a, b = best
    if a is None:
        return value, None, None, measured, skipped
    upper, lower = sorted((a, b), key=lambda t: scheme.anatomical_rank(t[1]))
    return value, upper[1:], lower[1:], measured, skipped


def cobb_max(spine: Spine) -> Row:
    value, upper, lower, measured, skipped = cobb_endplates(spine)
    names = [scheme.vertebra_name(v) for v in measured]
    labelled = [scheme.vertebra_name(v) for v in spine.vertebrae]
    level = _span(names) if measured else _span(labelled)
    if value is None:
        note = "needs two vertebrae measurable in their mid-coronal planes"
        if skipped:
            note += ": " + "; ".join(skipped)
        return (level, "cobb_max_deg", None, "deg", note)
    if upper is None:
        note = "all endplates parallel"
    else:
        note = "between " + " and ".join(f"{scheme.vertebra_name(v)} {_SIDE_NAMES[side]}" for v, side in (upper, lower)) + " endplates"
    if skipped:
        note += "; not measured: " + "; ".join(skipped)
    return (level, "cobb_max_deg", value, "deg", note)


_SIDE_NAMES = {"upper": "superior", "lower": "inferior"}


def rows(spine: Spine) -> list[Row]:
    return [lordosis(spine), sacral_slope(spine), cobb_max(spine)]
