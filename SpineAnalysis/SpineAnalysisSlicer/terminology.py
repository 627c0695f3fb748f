"""The module's own terminology context: the SNOMED CT codes of the label scheme (``SpineAnalysisLib.labels``).

Slicer's "Segmentation category and type - DICOM master list" does not contain the per-vertebra codes (L4
11994002, S1 65985001, ...), so, as SlicerTotalSegmentator does, the module ships a context file in Slicer's
terminology JSON format (``Resources/Terminology``) and loads it at start-up; every segment's entry names it.
Codes shared by several labels (the generic "Vertebra" for L6/T13, "Intervertebral disc" for discs without a
per-level code) appear once.
"""

from __future__ import annotations

import json
import os

import slicer
from SpineAnalysisLib import labels as scheme

CONTEXT_NAME = "Segmentation category and type - SpineAnalysis"
CATEGORY = ("SCT", "123037004", "Anatomical Structure")
FILE_NAME = "SegmentationCategoryTypeModifier-SpineAnalysis.term.json"
SCHEMA = "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/segment-context-schema.json#"


def contextPath() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", "Terminology", FILE_NAME)


def contextDocument() -> dict:
    """The context as Slicer's terminology JSON (what :func:`contextPath` holds)."""
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


def writeContext(path: str) -> str:
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(contextDocument(), stream, indent=2)
        stream.write("\n")
    return path


def loadContext(terminologiesLogic) -> bool:
    """Load the shipped context into Slicer's terminologies (once); True when it is loaded."""
    if terminologiesLogic is None:
        return False
    if isLoaded(terminologiesLogic):
        return True
    result = terminologiesLogic.LoadTerminologyFromFile(contextPath())
    return bool(result)  # the context name from Slicer 5.8 on, a success flag before


def isLoaded(terminologiesLogic) -> bool:
    import vtk

    names = vtk.vtkStringArray()
    terminologiesLogic.GetLoadedTerminologyNames(names)
    return CONTEXT_NAME in [names.GetValue(i) for i in range(names.GetNumberOfValues())]


def serializedEntry(label: int, name=None) -> str:
    """Slicer's serialised entry (context, category, type) of a scheme label; ``name`` keeps a disc's own
    neighbours ("L5-L6" gets the generic disc code, not L5/S1's)."""
    structure = scheme.structure_for_name(name) if name else scheme.structure(label)
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        CONTEXT_NAME,
        CATEGORY[1], CATEGORY[0], CATEGORY[2],
        structure.snomed_code, "SCT", structure.snomed_meaning,
        "", "", "",
        "",
        "", "", "",
        "", "", "",
    )  # fmt: skip


def typeCodesInContext(terminologiesLogic) -> set:
    """(category code, type code) pairs Slicer finds in the loaded context."""
    category = slicer.vtkSlicerTerminologyCategory()
    found = set()
    for c in range(terminologiesLogic.GetNumberOfCategoriesInTerminology(CONTEXT_NAME)):
        if not terminologiesLogic.GetNthCategoryInTerminology(CONTEXT_NAME, c, category):
            continue
        for t in range(terminologiesLogic.GetNumberOfTypesInTerminologyCategory(CONTEXT_NAME, category)):
            typeObject = slicer.vtkSlicerTerminologyType()
            if terminologiesLogic.GetNthTypeInTerminologyCategory(CONTEXT_NAME, category, t, typeObject):
                found.add((category.GetCodeValue(), typeObject.GetCodeValue()))
    return found
