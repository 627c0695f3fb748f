"""The measurement table: one row per structure, one column per parameter, a flag column from the library's
one rule, a quality status, and the Measurement objects behind each table.

:class:`MeasurementTables` keeps the measurements of each table *on the table node* (``MEASUREMENTS_ATTRIBUTE``, saved
with the scene), not in memory under its node ID: a new scene reuses node IDs, and a table of the new scene must never
export the previous case's numbers; a scene loaded again (or a restarted module) exports, re-scores and keeps the
user's corrections without measuring first. Values the user edits in the table are what is exported, and
they stay in the table when it is measured again, as long as the value they override is measured again unchanged
(an edit of L3's height survives re-measuring an edited disc or re-scoring; a changed L3 shows its new measurement).
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid

import slicer
import vtk
from SpineAnalysisLib import quality as qualityChecks
from SpineAnalysisLib import results_table
from SpineAnalysisLib.measure import flags as normalRange
from SpineAnalysisLib.measure import normative
from SpineAnalysisLib.measurements import Measurement

from . import review, volumes
from .compat import _
from .modeloutput import MODEL_ATTRIBUTE, runSummary

STRUCTURE_COLUMN = "Structure"
TYPE_COLUMN = "Type"
FLAG_COLUMN = "Outside normal range"
NOTES_COLUMN = "Notes"
#: Table node attributes: the key of its measurements, the subject its z-scores are for, the quality (and the
#: model, MODEL_ATTRIBUTE, as on the segmentation).
MEASUREMENTS_KEY_ATTRIBUTE = "SpineAnalysis.MeasurementsKey"
MEASUREMENTS_ATTRIBUTE = "SpineAnalysis.Measurements"
SUBJECT_ATTRIBUTE = "SpineAnalysis.Subject"
QUALITY_ATTRIBUTE = "SpineAnalysis.Quality"
#: Table node attribute: why the table could not be measured again after a change (absent when it is up to date).
OUT_OF_DATE_ATTRIBUTE = "SpineAnalysis.OutOfDate"
#: Node reference from a table to the segmentation it measures.
SEGMENTATION_REFERENCE = "SpineAnalysisSegmentation"


def rowKey(measurement):
    return (measurement.structure, measurement.level)


def subjectText(sex, age) -> str:
    return f"{results_table.subject_sex(sex) or ''}|{results_table.subject_age(age) or ''}"


def flagsOf(values: dict) -> str:
    """Text of the "outside normal range" column: the z-scores flagged by the library's one rule
    (``SpineAnalysisLib.measure.flags``), exactly what the CSV's ``flag`` column, report.png and the HTML reports say
    of the same values. A Genant grade is not a reference-interval flag: it has its own column."""
    return "; ".join(normalRange.flags_of(values))


def markOutOfDate(tableNode, reason) -> None:
    """Say on the table that it shows numbers from before a change it could not follow; ``reason`` None: it was
    just measured (re-scoring alone does not bring it up to date)."""
    if reason is None:
        tableNode.RemoveAttribute(OUT_OF_DATE_ATTRIBUTE)
    else:
        tableNode.SetAttribute(OUT_OF_DATE_ATTRIBUTE, reason or "?")


def qualityText(tableNode) -> str:
    """The case's quality banner ("Quality: review - reason; reason"), or "Measurements out of date - why" when
    the table could not follow the last change; "" when the table carries neither."""
    outOfDate = tableNode.GetAttribute(OUT_OF_DATE_ATTRIBUTE) if tableNode is not None else None
    if outOfDate:
        return _("Measurements out of date (they show the segmentation before the last change): {reason}").format(reason=outOfDate)
    quality = qualityOf(tableNode)
    if not quality:
        return ""
    reviewed = qualityChecks.levels_review_text(quality.get("levels_review"))
    reasons = "; ".join(list(quality.get("reasons") or []) + ([reviewed] if reviewed else []))
    return _("Quality: {status}").format(status=quality.get("status", "?")) + (f" - {reasons}" if reasons else "")


def qualityOf(tableNode) -> dict:
    """The table's quality (``Quality.to_dict()``: status, reasons, notes, levels_review); {} when it has none."""
    try:
        quality = json.loads((tableNode.GetAttribute(QUALITY_ATTRIBUTE) if tableNode is not None else None) or "{}")
    except ValueError:
        return {}
    return quality if isinstance(quality, dict) else {}


def qualityStatus(tableNode) -> str:
    return qualityOf(tableNode).get("status", "")


def assessQuality(measurements, segmentationNode):
    """``SpineAnalysisLib.quality.assess`` with the run's labelling checks and the reader's review of the levels."""
    return qualityChecks.assess(measurements, runSummary(segmentationNode), review.levelsReviewed(segmentationNode))


def tableValue(tableNode, structureName: str, parameter: str):
    """The number in the row of ``structureName`` and the column ``parameter`` (None if absent or empty)."""
    table = tableNode.GetTable()
    names = table.GetColumnByName(STRUCTURE_COLUMN)
    column = table.GetColumnByName(parameter)
    if names is None or column is None:
        return None
    for row in range(table.GetNumberOfRows()):
        if names.GetValue(row) == structureName:
            value = column.GetValue(row)
            return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    return None


def measuresSegmentation(tableNode, segmentationNode) -> bool:
    return tableNode is not None and segmentationNode is not None and tableNode.GetNodeReferenceID(SEGMENTATION_REFERENCE) == segmentationNode.GetID()


def tableForSegmentation(segmentationNode, current=None):
    """The table to show with ``segmentationNode``: ``current`` when it measures that segmentation, else the newest
    table that does, else None (a table of another segmentation would be overwritten by the next measurement)."""
    if segmentationNode is None:
        return None
    if current is None or measuresSegmentation(current, segmentationNode):
        return current
    own = tablesOfSegmentation(segmentationNode)
    return own[-1] if own else None


def tablesOfSegmentation(segmentationNode) -> list:
    """Every table node that measures ``segmentationNode``, oldest first."""
    return [node for node in volumes.nodesOfClass("vtkMRMLTableNode") if measuresSegmentation(node, segmentationNode)]


def structureNameOfRow(tableNode, row: int):
    names = tableNode.GetTable().GetColumnByName(STRUCTURE_COLUMN)
    if names is None or not 0 <= row < names.GetNumberOfValues():
        return None
    return names.GetValue(row)


def fillTable(tableNode, measurements) -> None:
    """Show ``measurements`` in ``tableNode``: rows cranial to caudal, columns in the measure modules' order."""
    rows = {}
    units = {}
    for m in measurements:
        row = rows.setdefault(rowKey(m), {"values": {}, "notes": []})
        row["values"][m.parameter] = m.value
        if m.note:
            row["notes"].append(f"{m.parameter}: {m.note}")
        if m.unit and m.parameter not in units:
            units[m.parameter] = m.unit
    parameters = results_table.column_order(m.parameter for m in measurements)
    keys = sorted(rows, key=lambda key: results_table.row_sort_key(*key))

    wasModified = tableNode.StartModify()
    tableNode.RemoveAllColumns()
    if hasattr(tableNode, "SetUseColumnTitleAsColumnHeader"):  # column titles: not in every supported version
        tableNode.SetUseColumnTitleAsColumnHeader(True)
    else:
        tableNode.SetUseColumnNameAsColumnHeader(True)
    table = tableNode.GetTable()
    textColumns = {}
    for name in (STRUCTURE_COLUMN, TYPE_COLUMN, FLAG_COLUMN, NOTES_COLUMN):
        textColumns[name] = vtk.vtkStringArray()
        textColumns[name].SetName(name)
    numberColumns = {}
    for parameter in parameters:
        column = vtk.vtkDoubleArray()
        column.SetName(parameter)
        numberColumns[parameter] = column
    for key in keys:
        row = rows[key]
        textColumns[STRUCTURE_COLUMN].InsertNextValue(key[1])
        textColumns[TYPE_COLUMN].InsertNextValue(key[0])
        for parameter, column in numberColumns.items():
            value = row["values"].get(parameter)
            column.InsertNextValue(float("nan") if value is None else float(value))
        textColumns[FLAG_COLUMN].InsertNextValue(flagsOf(row["values"]))
        textColumns[NOTES_COLUMN].InsertNextValue("; ".join(row["notes"]))
    for column in [textColumns[STRUCTURE_COLUMN], textColumns[TYPE_COLUMN], *numberColumns.values(), textColumns[FLAG_COLUMN], textColumns[NOTES_COLUMN]]:
        table.AddColumn(column)
    for parameter in parameters:
        if parameter in units:
            tableNode.SetColumnUnitLabel(parameter, units[parameter])
        if hasattr(tableNode, "SetColumnTitle"):  # as SetUseColumnTitleAsColumnHeader
            tableNode.SetColumnTitle(parameter, parameter)
    tableNode.SetColumnDescription(FLAG_COLUMN, normalRange.RULE_TEXT + _("; and a Genant grade above 0"))
    table.Modified()
    tableNode.Modified()
    tableNode.EndModify(wasModified)


#: a shown value within this relative difference of the measured one is not an edit: a saved table (.tsv) keeps 6
#: significant digits (10.0177304964539 comes back as 10.0177)
SHOWN_TOLERANCE = 1e-5


def _same(a, b) -> bool:
    return (a is None) == (b is None) and (a is None or math.isclose(a, b, rel_tol=SHOWN_TOLERANCE, abs_tol=1e-12))


def _cells(tableNode):
    """``(structure, level) -> row`` of the table as it is now, and its numeric columns by name."""
    table = tableNode.GetTable()
    names, types = table.GetColumnByName(STRUCTURE_COLUMN), table.GetColumnByName(TYPE_COLUMN)
    rows = {(types.GetValue(r), names.GetValue(r)): r for r in range(table.GetNumberOfRows())} if names and types else {}
    columns = {}
    for index in range(table.GetNumberOfColumns()):
        column = table.GetColumn(index)
        if column is not None and column.IsNumeric():
            columns[column.GetName()] = column
    return rows, columns


def _shownValues(tableNode) -> dict:
    """``{(structure, level, parameter): value shown}`` of every numeric cell (None for an empty one)."""
    rows, columns = _cells(tableNode)
    shown = {}
    for (structure, level), row in rows.items():
        for parameter, column in columns.items():
            value = column.GetValue(row)
            shown[(structure, level, parameter)] = None if value is None or math.isnan(value) else float(value)
    return shown


#: "measured again unchanged" within this relative (and absolute) difference: a full measurement refits the spine's
#: frame, which moves untouched structures' values by up to about 5e-5 of their size (a model segmentation of IVD_20
#: after 2 mm of one disc were erased: other discs' angles by 7e-5 deg, slips by 3e-4 %)
UNCHANGED_TOLERANCE = 1e-4


def _unchanged(before, after) -> bool:
    return (before is None) == (after is None) and (before is None or math.isclose(before, after, rel_tol=UNCHANGED_TOLERANCE, abs_tol=UNCHANGED_TOLERANCE))


def _restoreEdits(tableNode, measurements, edits) -> None:
    """Write back the user's edits whose overridden value was measured again unchanged."""
    if not edits:
        return
    rows, columns = _cells(tableNode)
    changed = False
    for m in measurements:
        key = (*rowKey(m), m.parameter)
        if key in edits and _unchanged(edits[key][0], m.value) and rowKey(m) in rows and m.parameter in columns:
            shown = edits[key][1]
            columns[m.parameter].SetValue(rows[rowKey(m)], float("nan") if shown is None else shown)
            changed = True
    if changed:
        tableNode.GetTable().Modified()
        tableNode.Modified()


def _storedMeasurements(text):
    try:
        return [Measurement(**entry) for entry in json.loads(text)]
    except (TypeError, ValueError):  # not written by this module
        return []


class MeasurementTables:
    """The Measurement lists behind the table nodes this module filled, read from the nodes (and kept parsed while
    the node's text is the same, so that the same objects come back)."""

    def __init__(self):
        self._byKey = {}  # key -> (stored text, measurements)

    @staticmethod
    def key(tableNode):
        return tableNode.GetAttribute(MEASUREMENTS_KEY_ATTRIBUTE) if tableNode is not None else None

    def clear(self) -> None:
        self._byKey.clear()

    def has(self, tableNode) -> bool:
        return bool(self._measured(tableNode))

    def _measured(self, tableNode) -> list:
        key = self.key(tableNode)
        text = tableNode.GetAttribute(MEASUREMENTS_ATTRIBUTE) if key else None
        if not text:
            return []
        cached = self._byKey.get(key)
        if cached is None or cached[0] != text:
            cached = self._byKey[key] = (text, _storedMeasurements(text))
        return cached[1]

    def show(self, tableNode, measurements, segmentationNode, volumeNode, labels=None, sex=None, age=None):
        """Show new measurements in ``tableNode`` (created beside the volume when None); returns the table node.

        With ``labels`` only those structures were measured again: the other rows are kept (spine rows
        included: measure_case makes them only in a full measurement).
        """
        if tableNode is None:
            tableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", f"{segmentationNode.GetName()} measurements")
            volumes.placeNextTo(tableNode, volumeNode)
        edits = self._edits(tableNode)
        if labels is not None:
            wanted = set(labels)
            fresh = {rowKey(m) for m in measurements}
            previous = self._measured(tableNode)
            measurements = [m for m in previous if m.label not in wanted and rowKey(m) not in fresh] + list(measurements)
        key = self.key(tableNode) or uuid.uuid4().hex
        tableNode.SetAttribute(MEASUREMENTS_KEY_ATTRIBUTE, key)
        tableNode.SetNodeReferenceID(SEGMENTATION_REFERENCE, segmentationNode.GetID())
        tableNode.SetAttribute(SUBJECT_ATTRIBUTE, subjectText(sex, age))
        tableNode.SetAttribute(MODEL_ATTRIBUTE, segmentationNode.GetAttribute(MODEL_ATTRIBUTE) or "")
        tableNode.SetAttribute(QUALITY_ATTRIBUTE, json.dumps(assessQuality(measurements, segmentationNode).to_dict()))
        text = json.dumps([dataclasses.asdict(m) for m in measurements])
        self._byKey[key] = (text, list(measurements))
        tableNode.SetAttribute(MEASUREMENTS_ATTRIBUTE, text)
        fillTable(tableNode, measurements)
        _restoreEdits(tableNode, measurements, edits)
        return tableNode

    def _edits(self, tableNode) -> dict:
        """``{(structure, level, parameter): (measured, shown)}`` for the cells the user changed in the table."""
        measured = self._measured(tableNode) if tableNode is not None else None
        if not measured:
            return {}
        shown = _shownValues(tableNode)
        edits = {}
        for m in measured:
            key = (*rowKey(m), m.parameter)
            if key in shown and not _same(shown[key], m.value):
                edits[key] = (m.value, shown[key])
        return edits

    def measurementsOf(self, tableNode) -> list:
        """The Measurement objects shown in a table, with the values as the table now shows them: a number edited
        in the table replaces the measured one (noted in the row's note)."""
        measured = self._measured(tableNode) if tableNode is not None else None
        if not measured:
            return []
        shownValues = _shownValues(tableNode)
        result = []
        for m in measured:
            key = (*rowKey(m), m.parameter)
            if key in shownValues and not _same(shownValues[key], m.value):
                shown = shownValues[key]
                note = f"edited in the table (measured: {'none' if m.value is None else f'{m.value:.6g}'})"
                m = dataclasses.replace(m, value=shown, note="; ".join(n for n in (m.note, note) if n))
            result.append(m)
        return result

    def rescore(self, tableNode, segmentationNode, sex=None, age=None):
        """The table's z-scores and flags recomputed for another sex/age by the library (``normative.score``),
        without measuring again; returns the table node."""
        rescored = normative.score(self._measured(tableNode), results_table.subject_sex(sex), results_table.subject_age(age))
        return self.show(tableNode, rescored, segmentationNode, None, sex=sex, age=age)

    def reassess(self, tableNode, segmentationNode) -> None:
        """The table's quality assessed again from its measurements, without measuring (the reader reviewed the
        levels); nothing for a table without measurements."""
        measured = self._measured(tableNode)
        if measured:
            tableNode.SetAttribute(QUALITY_ATTRIBUTE, json.dumps(assessQuality(measured, segmentationNode).to_dict()))

    def isForSubject(self, tableNode, sex, age) -> bool:
        return tableNode.GetAttribute(SUBJECT_ATTRIBUTE) == subjectText(sex, age)
