"""One error message per failure.

``slicer.util.tryWithErrorDisplay`` shows a dialog *and re-raises* (Base/Python/slicer/util.py), so a block
nested in another, or an outer ``except`` that reports again, shows the same error twice. The widget uses one
:class:`ErrorReporter` instead: the outermost ``action`` shows the error once and swallows it; nested ones pass
it up untouched. Dialog and cursor are callables, so this runs (and is tested) without Qt.
"""

from __future__ import annotations

import contextlib
import logging
import traceback


class ErrorReporter:
    def __init__(self, display, setWaitCursor=None, restoreCursor=None):
        self._display = display  # display(message, detailedText)
        self._setWaitCursor = setWaitCursor
        self._restoreCursor = restoreCursor
        self._depth = 0
        self.lastError = None

    @contextlib.contextmanager
    def action(self, message: str, waitCursor: bool = False):
        """Run the block; on an exception show ``message`` and the reason once (outermost level only).

        The wait cursor is restored before the dialog appears, and never stays on after the block.
        """
        outermost = self._depth == 0
        cursor = waitCursor and self._setWaitCursor is not None
        if cursor:
            self._setWaitCursor()
        self._depth += 1
        try:
            yield
        except Exception as error:  # noqa: BLE001 - every failure of a user action is reported
            if cursor:
                cursor = False
                self._restoreCursor()
            if not outermost:
                raise
            self.lastError = error
            logging.error("SpineAnalysis: %s %s", message, error)
            self._display(f"{message}\n\n{error}", traceback.format_exc())
        finally:
            self._depth -= 1
            if cursor:
                self._restoreCursor()
