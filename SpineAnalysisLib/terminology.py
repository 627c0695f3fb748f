"""SNOMED CT terminology of the label scheme (:mod:`.labels`), as 3D Slicer stores it; pure strings, no Slicer.

Slicer's "Segmentation category and type - DICOM master list" does not contain the per-vertebra codes (L4
11994002, S1 65985001, ...), so, as SlicerTotalSegmentator does, the Slicer module ships a context in Slicer's
terminology JSON format (:func:`context_document`) and every segment's entry names it
(:func:`serialized_entry`). The web review page writes the same entries into the ``.seg.nrrd`` it exports.
Codes shared by several labels (the generic "Vertebra" for L6/T13, "Intervertebral disc" for discs without a
per-level code) appear once in the context.
"""

from __future__ import annotations

from . import labels as scheme

CONTEXT_NAME = "Segmentation category and type - SpineAnalysis"
CATEGORY = ("SCT", "123037004", "Anatomical Structure")  # (coding scheme, code, meaning)
FILE_NAME = "SegmentationCategoryTypeModifier-SpineAnalysis.term.json"
SCHEMA = "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/segment-context-schema.json#"


def context_document() -> dict:
    """The context as Slicer's terminology JSON (the module's ``Resources/Terminology/`` file holds it)."""
    types = {}
    for label in scheme.all_labels():
        structure = scheme.structure(label)
        if structure.snomed_code in types:
            continue
        generic = structure.snomed_meaning in ("Vertebra", scheme.DISC_SNOMED[1])
        types[structure.snomed_code] = {
            "CodeMeaning": structure.snomed_meaning,
            "CodingSchemeDesignator": "SCT",
            "CodeValue": structure.snomed_code,
            "3dSlicerLabel": structure.snomed_meaning.lower() if generic else structure.name,
            "recommendedDisplayRGBValue": [int(round(255 * c)) for c in structure.color],
        }
    category = {"CodeMeaning": CATEGORY[2], "CodingSchemeDesignator": CATEGORY[0], "CodeValue": CATEGORY[1], "showAnatomy": False,
                "Type": list(types.values())}  # fmt: skip
    return {"SegmentationCategoryTypeContextName": CONTEXT_NAME, "@schema": SCHEMA, "SegmentationCodes": {"Category": [category]}}


def serialized_entry(label: int, name: str | None = None) -> str:
    """A segment's terminology entry as Slicer serialises it (``vtkSlicerTerminologiesModuleLogic::
    SerializeTerminologyEntry``: context~category~type~type modifier~anatomic context~region~region modifier,
    each code as ``scheme^value^meaning``). ``name`` keeps a disc's own neighbours ("L5-L6" gets the generic
    disc code, not L5/S1's)."""
    structure = scheme.structure_for_name(name) if name else scheme.structure(label)
    fields = [
        CONTEXT_NAME,
        "^".join(CATEGORY),
        "^".join(("SCT", structure.snomed_code, structure.snomed_meaning)),
        "^^",  # no type modifier
        "",  # no anatomic context
        "^^",  # no region
        "^^",  # no region modifier
    ]
    return "~".join(fields)
