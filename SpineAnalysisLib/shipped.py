"""Where the files shipped with the library are: the model(s) and the small sample.

Their source location is the repository's top-level ``Resources/`` (``Models/``, ``Samples/``); the Slicer
extension installs that folder beside the library with the same layout. A wheel carries it inside the
package as ``SpineAnalysisLib/Resources`` (setup.py), found here through ``importlib.resources``, so an
installed ``spineanalysis`` finds its model without the source tree.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

SAMPLE_IMAGE = "MyoSegmenTUM_VB3_02_image.nii.gz"
SAMPLE_LABELS = "MyoSegmenTUM_VB3_02_labels.nii.gz"


def resources_folder() -> Path:
    """``Resources`` inside the installed package, else the one beside the package (checkout, Slicer extension)."""
    inside = importlib.resources.files(__package__) / "Resources"
    if inside.is_dir():
        return Path(str(inside))  # a wheel is installed unpacked: a real folder
    return Path(__file__).resolve().parents[1] / "Resources"


def models_folder() -> Path:
    return resources_folder() / "Models"


def sample_image() -> Path:
    """The bundled sagittal T2 MRI (MyoSegmenTUM VB3_02, see Resources/Samples/README.md)."""
    return resources_folder() / "Samples" / SAMPLE_IMAGE


def sample_labels() -> Path:
    """Its expert label map (L1-L5 vertebral bodies)."""
    return resources_folder() / "Samples" / SAMPLE_LABELS
