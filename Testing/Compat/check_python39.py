"""Slicer 5.8 runs Python 3.9: every Python file of the extension must compile there, and the parts of the
library the module imports must import and measure there (run with a Python 3.9 that has only numpy and
SimpleITK: ``make check-py39``).

Exit status 0 when all is well; otherwise the failures, one per line.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Library modules imported by the module and its Slicer-side package (found by reading their imports, so a new
#: import is checked too), and the torch-free parts the command line's measurement uses.
MODULE_FILES = ("SpineAnalysis/SpineAnalysis.py", "SpineAnalysis/SpineAnalysisSlicer/*.py")
EXTRA_MODULES = ("SpineAnalysisLib.measurements", "SpineAnalysisLib.quality")


def library_modules_of_the_module() -> list:
    import ast

    found = set(EXTRA_MODULES)
    for pattern in MODULE_FILES:
        for path in ROOT.glob(pattern):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("SpineAnalysisLib"):
                    for alias in node.names:
                        candidate = f"{node.module}.{alias.name}"
                        is_module = (ROOT / candidate.replace(".", "/")).with_suffix(".py").exists() or (ROOT / candidate.replace(".", "/")).is_dir()
                        found.add(candidate if is_module else node.module)
                elif isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names if alias.name.startswith("SpineAnalysisLib"))
    return sorted(found)


def compile_all() -> list:
    failures = []
    for path in sorted(ROOT.glob("**/*.py")):
        if any(part.startswith(".") or part in ("build", "out", "__pycache__") for part in path.relative_to(ROOT).parts):
            continue
        try:
            compile(path.read_text(encoding="utf-8"), str(path), "exec", dont_inherit=True)
        except SyntaxError as error:
            failures.append(f"{path.relative_to(ROOT)}:{error.lineno}: {error.msg}")
    return failures


def import_and_measure() -> list:
    sys.path.insert(0, str(ROOT))
    failures = []
    for name in library_modules_of_the_module():
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - report every module
            failures.append(f"import {name}: {type(error).__name__}: {error}")
    if failures:
        return failures
    import numpy as np
    import SimpleITK as sitk

    from SpineAnalysisLib import measurements

    labels = np.zeros((40, 60, 30), np.uint16)  # (k, j, i): L3, L3-L4, L4 stacked along k (superior)
    for label, (k0, k1) in ((22, (2, 14)), (122, (14, 18)), (23, (18, 30))):
        labels[k0:k1, 15:45, 8:22] = label
    image = sitk.GetImageFromArray(np.where(labels > 100, 600.0, np.where(labels > 0, 300.0, 40.0)).astype(np.float32))
    label_map = sitk.GetImageFromArray(labels)
    for item in (image, label_map):
        item.SetSpacing((1.0, 1.0, 2.0))
    rows = measurements.measure_case(image, label_map, sex="F", age=45)
    heights = [m.value for m in rows if m.level == "L3-L4" and m.parameter == "height_mean_mm"]
    if not heights or heights[0] is None:
        failures.append(f"measure_case on Python {sys.version.split()[0]}: no L3-L4 height")
    return failures


def main() -> int:
    failures = compile_all() + import_and_measure()
    for line in failures:
        print(line)
    print(f"Python {sys.version.split()[0]}: {'OK' if not failures else f'{len(failures)} problem(s)'}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
