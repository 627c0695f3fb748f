"""Slicer versions: the supported range and the few calls whose API changed inside it.

Supported: Slicer 5.8 (Python 3.9) to 5.12 (Python 3.12). Checked against Slicer's sources:
``vtkSegment::GetTerminology``/``SetTerminology`` exist from 5.10 on; 5.8 stores the same serialised entry as
the segment tag named ``vtkSegment::GetTerminologyEntryTagName()`` ("TerminologyEntry").
"""

from __future__ import annotations

import vtk

try:  # Slicer's translation function (every supported version); slicer-core has no slicer.i18n
    from slicer.i18n import tr as _
except ImportError:  # pragma: no cover - outside the application

    def _(text):
        return text


MINIMUM_VERSION = (5, 8)
TESTED_VERSIONS = ("5.8", "5.10", "5.12")


def versionTuple(text: str):
    """(major, minor) of "5.8.1" / "5.13.0-2026-09-01"; None when it cannot be read."""
    try:
        major, minor = str(text).split("-")[0].split(".")[:2]
        return int(major), int(minor)
    except (ValueError, AttributeError):
        return None


def unsupportedVersionMessage(version: str):
    """A sentence for the user when ``version`` is older than :data:`MINIMUM_VERSION`; None otherwise."""
    parsed = versionTuple(version)
    if parsed is None or parsed >= MINIMUM_VERSION:
        return None
    return (
        f"SpineAnalysis needs 3D Slicer {MINIMUM_VERSION[0]}.{MINIMUM_VERSION[1]} or newer (tested with "
        f"{', '.join(TESTED_VERSIONS)}); this is Slicer {version}. Please install a current Slicer."
    )


def segmentTerminology(segment) -> str:
    """The serialised terminology entry of a segment ("" when it has none), on every supported version."""
    getter = getattr(segment, "GetTerminology", None)
    if getter is not None:  # Slicer >= 5.10
        return getter() or ""
    value = vtk.reference("")
    found = segment.GetTag(segment.GetTerminologyEntryTagName(), value)
    return str(value) if found else ""
