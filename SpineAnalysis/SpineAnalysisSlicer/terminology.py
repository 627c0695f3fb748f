"""The module's terminology context in Slicer: the shipped context file, loading it, and reading it back.

The context and the segments' entries are pure strings built by :mod:`SpineAnalysisLib.terminology` (the web
review page uses them too); this module only adds what needs Slicer.
"""

from __future__ import annotations

import json
import os

import slicer
from SpineAnalysisLib import terminology as library

CONTEXT_NAME = library.CONTEXT_NAME
CATEGORY = library.CATEGORY
FILE_NAME = library.FILE_NAME
contextDocument = library.context_document
serializedEntry = library.serialized_entry  # (label, name=None): a segment's serialised entry


def contextPath() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", "Terminology", FILE_NAME)


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
