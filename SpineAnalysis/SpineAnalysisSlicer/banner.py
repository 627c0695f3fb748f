"""The quality banner above the measurement table: its text follows the table node it shows.

The table is measured again in place (an edit re-measured after the widget's debounce timer, "Measure" on the same
table, a change of sex or age), which changes neither the parameter node nor the node it refers to, so the widget's
parameter-node observer never hears of it. The banner observes the table node itself instead.
"""

from __future__ import annotations

import vtk

from .table import qualityText


class QualityBanner:
    """Calls ``show(text)`` with :func:`table.qualityText` of the observed table whenever that text changes
    ("" when there is no table or it carries no quality)."""

    def __init__(self, show):
        self._show = show
        self._table = None
        self._tag = None
        self.text = None

    def setTable(self, tableNode) -> None:
        if tableNode is not self._table:
            self.stop()
            self._table = tableNode
            if tableNode is not None:
                self._tag = tableNode.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: self.refresh())
        self.refresh()

    def refresh(self) -> None:
        text = qualityText(self._table)
        if text != self.text:
            self.text = text
            self._show(text)

    def stop(self) -> None:
        """Stop observing (scene closed, module cleaned up); the banner keeps its last text."""
        if self._table is not None and self._tag is not None:
            self._table.RemoveObserver(self._tag)
        self._table, self._tag = None, None
