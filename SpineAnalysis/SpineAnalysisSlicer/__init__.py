"""Slicer-side parts of the SpineAnalysis module, one job per file (see docs/architecture.md).

They use MRML, ``slicer.util`` and ``SpineAnalysisLib``; none of them uses Qt, so all of them run with
slicer-core outside the application. Qt-only steps (dialogs, cursors) stay in the widget and reach these
files through callables passed in (``feedback.ErrorReporter``, ``dependencies.ensure``).
"""
