"""Layout rules of a per-level results table (the Slicer module's measurement table).

The column order comes from the measure modules' own parameter lists, so a parameter added there appears
without editing a second list; rows run cranial to caudal, unknown levels after them, the whole-spine rows last.
"""

from __future__ import annotations

from typing import Optional, Tuple

from . import labels as scheme
from .measure import alignment, disc, normative, vertebra


def _merged(*lists) -> Tuple[str, ...]:
    order = []
    for parameters in lists:
        for name, _unit in parameters:
            if name not in order:
                order.append(name)
    return tuple(order)


#: Table columns: disc parameters, then the vertebra-only ones, then the whole-spine angles.
PARAMETER_ORDER: Tuple[str, ...] = _merged(disc.PARAMETERS, vertebra.PARAMETERS, alignment.PARAMETERS)


def column_order(present) -> list:
    """The parameters of ``present`` in :data:`PARAMETER_ORDER`, any others after them alphabetically."""
    present = set(present)
    return [p for p in PARAMETER_ORDER if p in present] + sorted(present - set(PARAMETER_ORDER))


def row_sort_key(structure: str, level: str):
    """Sort key of a row: vertebrae and discs cranial to caudal, unknown names next, spine rows last."""
    if structure == "spine":
        return (2, 0.0, level)
    try:
        return (0, scheme.anatomical_rank(scheme.label_from_name(level)), level)
    except ValueError:
        return (1, 0.0, level)


def subject_sex(value) -> Optional[str]:
    """"F"/"M" for the normative reference from a form value ("female", "M", ...); None for unknown or empty."""
    text = str(value or "").strip()
    if not text or text.lower() == "unknown":
        return None
    return normative.normalise_sex(text)


def subject_age(value) -> Optional[float]:
    """Age in years for the normative reference; None for 0 or empty (the form's "not given")."""
    if value in (None, "", 0, 0.0):
        return None
    return normative.check_age(value)
