"""The label scheme on one segment of a segmentation: its label from its name, and its colour and SNOMED CT
terminology entry set from that label.

One home for the Slicer module (``SpineAnalysisSlicer.segments``) and the web review page (``web.scene``).
It works on the ``vtkSegment`` object alone (3D Slicer or slicer-core): nothing here imports Qt or ``slicer``,
and it runs on Python 3.9 (Slicer 5.8).
"""

from __future__ import annotations

from . import labels as scheme
from . import terminology


def label_of_name(name: str) -> int | None:
    """Scheme label of a segment name ("L4" -> 23, "L4-L5" or "L4/L5" -> 123); None for other names."""
    try:
        return scheme.label_from_name(name)
    except ValueError:
        return None


def apply_scheme_to_segment(segment) -> int | None:
    """Set the colour and terminology entry of ``segment`` (a ``vtkSegment``) from its name; returns its scheme
    label, or None (segment left as it is) when the name is not in the scheme.

    The entry (:func:`.terminology.serialized_entry`) goes into the segment tag that Slicer 5.8 reads and that
    ``vtkSegment.GetTerminology`` returns from 5.10 on (``SetTerminology`` sets that same tag). Not
    ``SetLabelValue``: that is the segment's value inside its shared labelmap layer, and changing it without the
    voxels hands the segment other voxels; label values come from names on export.
    """
    name = segment.GetName()
    label = label_of_name(name)
    if label is None:
        return None
    segment.SetColor(*scheme.structure_color(label))
    segment.SetTag(segment.GetTerminologyEntryTagName(), terminology.serialized_entry(label, name))
    return label
