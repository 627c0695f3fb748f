"""Fixtures for the tests of the Slicer module that run outside the Slicer application (slicer-core).

``slicer_scene`` builds a real MRML scene the way Slicer's application does: an application logic, the
colour logic with the default colour nodes, and the Volumes, Segmentations, Tables, Terminologies,
Markups and Subject Hierarchy logics registered on it. ``slicer.mrmlScene`` and ``slicer.modules.<name>
.logic()`` are set for the duration of the test so that ``slicer.util`` helpers and the module's Logic work
unchanged. ``spine_module`` imports ``SpineAnalysis/SpineAnalysis.py`` with the Qt stand-ins of
``slicer_stubs``.

slicer-core is imported lazily: tests of SpineAnalysisLib that live in the same folder do not need it.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "SpineAnalysis"

_LOGICS = (
    # (name in slicer.modules, application-logic name, class name)
    ("volumes", "Volumes", "vtkSlicerVolumesLogic"),
    ("segmentations", "Segmentations", "vtkSlicerSegmentationsModuleLogic"),
    ("tables", "Tables", "vtkSlicerTablesLogic"),
    ("terminologies", "Terminologies", "vtkSlicerTerminologiesModuleLogic"),
    ("markups", "Markups", "vtkSlicerMarkupsLogic"),
    ("subjecthierarchy", "SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
)


class SceneHarness(types.SimpleNamespace):
    """What ``slicer_scene`` yields: ``scene``, ``app_logic``, ``colors`` and each module logic by name."""


def build_scene():
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(app_logic)
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    app_logic.SetModuleLogic("Colors", colors)
    harness = SceneHarness(scene=scene, app_logic=app_logic, colors=colors)
    modules = types.SimpleNamespace(colors=types.SimpleNamespace(logic=lambda: colors))
    for attribute, name, class_name in _LOGICS:
        logic = getattr(slicer, class_name)()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        setattr(harness, attribute, logic)
        setattr(modules, attribute, types.SimpleNamespace(logic=(lambda logic=logic: logic)))
    harness.modules = modules
    return harness


@pytest.fixture
def slicer_scene():
    """A real MRML scene with the module logics registered; ``slicer.mrmlScene``/``slicer.modules`` set."""
    harness = build_scene()
    import slicer

    saved = {name: getattr(slicer, name) for name in ("mrmlScene", "modules") if hasattr(slicer, name)}
    slicer.mrmlScene = harness.scene
    slicer.modules = harness.modules
    try:
        yield harness
    finally:
        harness.scene.Clear(True)
        for name in ("mrmlScene", "modules"):
            if name in saved:
                setattr(slicer, name, saved[name])
            elif hasattr(slicer, name):
                delattr(slicer, name)


SAMPLE_IMAGE = REPO / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_image.nii.gz"


@pytest.fixture(scope="session")
def segmented_crop(tmp_path_factory):
    """``spineanalysis segment CROP -o labels.nii.gz --summary summary.json --device cpu --progress`` run once,
    in process, on 16 central sagittal slices of the bundled sample (the real model on the CPU); the tests of
    its outputs (grid, progress lines, summary JSON) read the same run instead of segmenting again.
    Yields ``image``, ``labels``, ``summary`` (paths), ``status`` (exit status) and ``stdout`` (its lines)."""
    import contextlib
    import io

    import SimpleITK as sitk

    from SpineAnalysisLib.cli import main

    folder = tmp_path_factory.mktemp("segmented_crop")
    image, labels, summary = folder / "small.nrrd", folder / "labels.nii.gz", folder / "summary.json"
    sitk.WriteImage(sitk.ReadImage(str(SAMPLE_IMAGE))[:, :, 24:40], str(image))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["segment", str(image), "-o", str(labels), "--summary", str(summary), "--device", "cpu", "--progress"])
    return types.SimpleNamespace(image=image, labels=labels, summary=summary, status=status, stdout=stdout.getvalue().splitlines())


@pytest.fixture(scope="session")
def spine_module():
    """``SpineAnalysis/SpineAnalysis.py`` imported with the Qt/ScriptedLoadableModule stand-ins."""
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import slicer_stubs

    slicer_stubs.install()
    for path in (str(MODULE_DIR), str(REPO)):
        if path not in sys.path:
            sys.path.insert(0, path)
    return importlib.import_module("SpineAnalysis")


@pytest.fixture
def logic(spine_module, slicer_scene):
    """The module's Logic on the real slicer-core scene."""
    return spine_module.SpineAnalysisLogic()


@pytest.fixture
def phantom(spine_module, tmp_path):
    """(image path, label path, S bounds per structure) of the module's synthetic L3-L5 phantom."""
    return spine_module.SpineAnalysisTest.makePhantom(str(tmp_path))
