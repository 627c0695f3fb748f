"""Package layout for setuptools; the project metadata is in pyproject.toml.

The model and the sample stay in the repository's top-level ``Resources/`` (shared with the Slicer extension's
CMake install), and the wheel ships them inside the package as ``SpineAnalysisLib/Resources`` (package-dir
mapping), where :mod:`SpineAnalysisLib.shipped` finds them with ``importlib.resources``. Packages are found,
not listed, so a new subpackage cannot be left out of the wheel.
"""

from setuptools import find_packages, setup

RESOURCES = "SpineAnalysisLib.Resources"

setup(
    packages=find_packages(include=["SpineAnalysisLib", "SpineAnalysisLib.*"]) + [RESOURCES],
    package_dir={RESOURCES: "Resources"},
    package_data={
        "": ["*.json"],  # data files beside the code, in any subpackage
        RESOURCES: ["Models/README.md", "Models/*/manifest.json", "Models/*/*.pt", "Models/*/*.md", "Samples/*.nii.gz", "Samples/README.md"],
    },
)
