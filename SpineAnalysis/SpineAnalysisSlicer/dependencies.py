"""Python packages installed on first use: the model's (torch, MONAI) and DICOM SEG's (highdicom).

One question to the user, then the install. Checked against Slicer's sources: from Slicer 5.12
``slicer.packaging.pip_ensure(requirements, ..., prompt_install=True, requester=..., skip_in_testing=True)``
asks again unless ``prompt_install=False`` and raises ``RuntimeError`` when the user declines; older
versions have ``slicer.util.pip_install``. The PyTorch extension's ``installTorch`` picks a torch build for
the GPU driver. Nothing is installed while Slicer runs its tests or outside the application.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging

MODEL_REQUIREMENTS = ("torch>=2.2", "monai>=1.4")
DICOM_SEG_REQUIREMENTS = ("highdicom>=0.22",)


def _importName(requirement: str) -> str:
    for separator in ("<", ">", "=", "!", "~", "[", ";", " "):
        requirement = requirement.split(separator)[0]
    return requirement.strip().replace("-", "_").lower()


def missing(requirements) -> list:
    """The requirements whose package cannot be imported."""
    return [r for r in requirements if importlib.util.find_spec(_importName(r)) is None]


def findPipEnsure():
    """``pip_ensure`` of this Slicer (5.12+), or None."""
    for moduleName in ("slicer.packaging", "slicer.util"):
        try:
            ensure = getattr(importlib.import_module(moduleName), "pip_ensure", None)
        except ImportError:
            ensure = None
        if ensure is not None:
            return ensure
    return None


def ensure(requirements, *, confirm, inApplication: bool, testing: bool, installTorch=None, pipEnsure=None, pipInstall=None,
           requester: str = "SpineAnalysis") -> bool:  # fmt: skip
    """Make ``requirements`` importable after asking once; False when they stay missing (declined, testing...).

    ``confirm(text) -> bool`` asks the user (None: do not ask). ``installTorch()`` installs torch (the PyTorch
    extension) and returns None on failure; ``pipEnsure`` is Slicer 5.12's ``pip_ensure``, ``pipInstall``
    the older ``pip_install(text)``.
    """
    absent = missing(requirements)
    if not absent:
        return True
    if testing or not inApplication:
        logging.warning("SpineAnalysis: missing Python packages %s; not installing them here", ", ".join(absent))
        return False
    if confirm is not None and not confirm(
        f"This needs these Python packages: {', '.join(absent)}.\nInstall them now? This can take several minutes."
    ):
        return False
    try:
        if installTorch is not None and any(_importName(r) == "torch" for r in absent):
            if installTorch() is None:
                return False
            absent = [r for r in absent if _importName(r) != "torch"]
        if absent:
            if pipEnsure is not None:
                from packaging.requirements import Requirement

                options = {"requester": requester}
                if "prompt_install" in inspect.signature(pipEnsure).parameters:
                    options["prompt_install"] = False  # the user was asked above
                pipEnsure([Requirement(r) for r in absent], **options)
            else:
                pipInstall(" ".join(absent))
    except RuntimeError as error:  # pip_ensure: the user declined in Slicer's own dialog
        logging.warning("SpineAnalysis: packages not installed: %s", error)
        return False
    importlib.invalidate_caches()
    return not missing(requirements)
