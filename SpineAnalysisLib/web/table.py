"""The review page's measurement table: one row per structure, one column per parameter, units in headers.

Rows are the :class:`~SpineAnalysisLib.measurements.Measurement` objects of ``measure_case`` grouped by
structure, exactly the values the CSV export writes; nothing is recomputed here. The flag column shows the
rows the CSV's ``flag`` column marks (decided once, by :mod:`SpineAnalysisLib.measure.flags`, when the row was
measured), in that module's words, as report.png does. Columns that are estimates say so in their header, and
the table's legend says what each was checked against (docs/validation.md; README: *experimental*).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..measure.flags import flag_text
from ..measurements import Measurement

UNIT_TEXT = {"mm": "mm", "deg": "°", "mm3": "mm³", "percent": "%", "ratio": "ratio", "grade": "grade", "z": "z"}


#: The outputs that are estimates (README: *experimental*) -> what they were checked against
#: (docs/validation.md, "Degeneration: Pfirrmann estimate, BianqueNet quantities, norms").
_PFIRRMANN_CHECKS = ("Pfirrmann's criteria; not validated against graded images (none with a usable licence): checked on "
                     "synthetic discs (bright -> I-II, grey -> III-IV, black and collapsed -> V) and on the healthy T2 "
                     "volunteers whose discs set its thresholds (in-sample)")
_Z_CHECKS = ("against the project's healthy reference named in the notes (58 volunteers; scored leave-one-subject-out "
             "their mean z is about 0 with 2-5 % flagged); age and sex not adjusted")
ESTIMATES = {
    "pfirrmann_estimate": _PFIRRMANN_CHECKS,
    "pfirrmann_confidence": "how clearly the Pfirrmann criteria fall on one side of their thresholds, not an agreement rate",
    "dhi_z": _Z_CHECKS,
    "hdr_z": _Z_CHECKS,
    "delta_si_z": _Z_CHECKS,
}
ESTIMATE_MARK = "estimate"


def header_text(parameter: str, unit: str) -> str:
    shown = UNIT_TEXT.get(unit, unit)
    text = f"{parameter} ({shown})" if shown else parameter
    return f"{text} [{ESTIMATE_MARK}]" if parameter in ESTIMATES else text


def estimate_legend(parameters: Iterable[str]) -> list[str]:
    """One line per kind of estimate among ``parameters`` ("dhi_z, hdr_z: estimate, against ...")."""
    by_text: dict[str, list[str]] = {}
    for p in dict.fromkeys(parameters):
        if p in ESTIMATES:
            by_text.setdefault(ESTIMATES[p], []).append(p)
    return [f"{', '.join(names)}: {ESTIMATE_MARK}, {text}" for text, names in by_text.items()]


def build_table(measurements: Iterable[Measurement]) -> tuple[list[dict], list[dict]]:
    """``(headers, rows)`` for a data table: headers ``{"title", "key"}``, rows keyed by parameter.

    Each row has ``level`` (the structure's name, e.g. "L4-L5"), ``structure`` ("disc", "vertebra",
    "spine"), one entry per parameter (a number rounded for display, or "" when missing), ``flags`` and
    ``notes`` (the rows' notes, among them why a value is missing), ``why`` (parameter -> that reason, for the
    empty cells' tooltips).
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
        row = {"level": level, "structure": structure, "flags": "; ".join(flag_text(m.parameter, m.value) for m in items if m.flag)}
        row["notes"] = "; ".join(f"{m.parameter}: {m.note}" for m in items if m.note)
        row["why"] = {m.parameter: m.note for m in items if m.value is None and m.note}  # shown on the empty cell
        for m in items:
            row[m.parameter] = "" if m.value is None else round(float(m.value), 3)
        rows.append(row)
    return headers, rows
