"""The review page's measurement table: one row per structure, one column per parameter, units in headers.

Rows are the :class:`~SpineAnalysisLib.measurements.Measurement` objects of ``measure_case`` grouped by
structure, exactly the values the CSV export writes; nothing is recomputed here. The flag column uses the
library's one rule (:func:`SpineAnalysisLib.measure.flags.flags_of`), as the Slicer table does.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..measure.flags import flags_of
from ..measurements import Measurement

UNIT_TEXT = {"mm": "mm", "deg": "°", "mm3": "mm³", "percent": "%", "ratio": "ratio", "grade": "grade", "z": "z"}


def header_text(parameter: str, unit: str) -> str:
    shown = UNIT_TEXT.get(unit, unit)
    return f"{parameter} ({shown})" if shown else parameter


def build_table(measurements: Iterable[Measurement]) -> tuple[list[dict], list[dict]]:
    """``(headers, rows)`` for a data table: headers ``{"title", "key"}``, rows keyed by parameter.

    Each row has ``level`` (the structure's name, e.g. "L4-L5"), ``structure`` ("disc", "vertebra",
    "spine"), one entry per parameter (a number rounded for display, or "" when missing), ``flags`` and
    ``notes`` (why a value is missing).
    """
    measurements = list(measurements)
    groups: dict[tuple[str, str], list[Measurement]] = {}
    units: dict[str, str] = {}
    for m in measurements:
        groups.setdefault((m.structure, m.level), []).append(m)
        units.setdefault(m.parameter, m.unit)
    parameters = list(dict.fromkeys(m.parameter for m in measurements))
    headers = [{"title": "level", "key": "level"}, {"title": "structure", "key": "structure"}]
    headers += [{"title": header_text(p, units[p]), "key": p} for p in parameters]
    headers += [{"title": "outside normal range", "key": "flags"}, {"title": "notes", "key": "notes"}]
    rows = []
    for (structure, level), items in groups.items():
        row = {"level": level, "structure": structure, "flags": "; ".join(flags_of({m.parameter: m.value for m in items}))}
        row["notes"] = "; ".join(f"{m.parameter}: {m.note}" for m in items if m.note)
        for m in items:
            row[m.parameter] = "" if m.value is None else round(float(m.value), 3)
        rows.append(row)
    return headers, rows
