"""3D Slicer module of the SpineAnalysis extension: segment a lumbar spine MRI into named vertebrae and discs,
review and correct the segmentation, and measure every level.

The work is done by the pure-Python library ``SpineAnalysisLib`` (bundled next to this file). This file
holds the Slicer side only:

* ``SpineAnalysisLogic`` - everything that touches the MRML scene (loading, label map <-> segmentation,
  terminology, measurement table, level navigation, relabelling, running the model). It needs no Qt and
  is tested outside the application with slicer-core (``Testing/Python``).
* ``SpineAnalysisWidget`` - a thin GUI: every action is one call into the logic.
* ``SpineAnalysisTest`` - the self-test run by "Reload and Test" and by ctest.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import unittest
import uuid
from typing import Annotated

import numpy as np
import vtk

import ctk  # noqa: F401  (used by the .ui widgets; imported as Slicer's template does)
import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.parameterNodeWrapper import Choice, Default, WithinRange, parameterNodeWrapper
from slicer.util import VTKObservationMixin

try:  # Slicer >= 5.4
    from slicer.i18n import tr as _
except ImportError:  # pragma: no cover - older Slicer or slicer-core

    def _(text):
        return text


# the segmentation node is part of MRML Core (Libs/MRML/Core) in every supported Slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode


def _libraryParentDirectory() -> str:
    """Folder holding ``SpineAnalysisLib``: next to this file once installed, one level up in the source tree."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(candidate, "SpineAnalysisLib", "__init__.py")):
            return candidate
    return here


_LIBRARY_PARENT = _libraryParentDirectory()
if _LIBRARY_PARENT not in sys.path:
    sys.path.insert(0, _LIBRARY_PARENT)

import SimpleITK as sitk  # noqa: E402

from SpineAnalysisLib import errors as spineErrors  # noqa: E402
from SpineAnalysisLib import imageio as spineIO  # noqa: E402
from SpineAnalysisLib import labels as scheme  # noqa: E402
from SpineAnalysisLib import quality as quality_checks  # noqa: E402
from SpineAnalysisLib.measure import flags as normal_range  # noqa: E402
from SpineAnalysisLib import relabel as relabelling  # noqa: E402
from SpineAnalysisLib import results_table  # noqa: E402
from SpineAnalysisLib.background import BackgroundProcess  # noqa: E402
from SpineAnalysisSlicer import compat, dependencies, dicomsource, feedback, terminology  # noqa: E402

#: Terminology of the segments: the module's own context (Resources/Terminology), loaded at start-up.
TERMINOLOGY_CONTEXT = terminology.CONTEXT_NAME
CATEGORY_CODE = terminology.CATEGORY
COLOR_TABLE_NAME = "SpineAnalysis labels"
COLOR_TABLE_ATTRIBUTE = "SpineAnalysis.LabelScheme"
DEVICES = ("auto", "cpu", "cuda")
SEXES = ("unknown", "female", "male")
#: Python packages the model needs (SimpleITK and numpy come with Slicer), and DICOM SEG export/import.
MODEL_REQUIREMENTS = dependencies.MODEL_REQUIREMENTS
DICOM_SEG_REQUIREMENTS = dependencies.DICOM_SEG_REQUIREMENTS
#: Node reference from a segmentation to the hidden label map of the model output it started from.
MODEL_OUTPUT_REFERENCE = "SpineAnalysisModelOutput"
#: Attribute (on the segmentation and on the model-output label map) naming the model that produced it.
MODEL_ATTRIBUTE = "SpineAnalysis.Model"
DEFAULT_MODEL_CHOICE = "default"
#: Volume node attribute: the DICOM series folder the volume was loaded from.
DICOM_FOLDER_ATTRIBUTE = dicomsource.FOLDER_ATTRIBUTE
#: Table node attribute: the key of the measurements shown in that table (node IDs are reused after a scene close).
MEASUREMENTS_KEY_ATTRIBUTE = "SpineAnalysis.MeasurementsKey"
#: Segmentation node attribute: the names before each Shift/Rename (JSON list), for "Undo rename".
#: Table node attribute: the sex and age its z-scores were computed for.
SUBJECT_ATTRIBUTE = "SpineAnalysis.Subject"
#: Table node attribute: the case's quality status as JSON {"status": ..., "reasons": [...]} (SpineAnalysisLib.quality).
QUALITY_ATTRIBUTE = "SpineAnalysis.Quality"
RENAME_HISTORY_ATTRIBUTE = "SpineAnalysis.RenameHistory"
#: DICOM identifiers written with the measurements (volume node attributes "DICOM.<name>").
DICOM_IDENTIFIER_TAGS = spineIO.DICOM_IDENTIFIER_TAGS

#: Table columns, from the measure modules' own parameter lists.
PARAMETER_ORDER = results_table.PARAMETER_ORDER
STRUCTURE_COLUMN = "Structure"
TYPE_COLUMN = "Type"
FLAG_COLUMN = "Outside normal range"
NOTES_COLUMN = "Notes"


def reloadLibrary() -> None:
    """Developer "Reload": drop SpineAnalysisLib and SpineAnalysisSlicer so that re-running this file imports them fresh."""
    for name in [n for n in sys.modules if n.split(".")[0] in ("SpineAnalysisLib", "SpineAnalysisSlicer")]:
        del sys.modules[name]


def _isTesting() -> bool:
    """True inside the Slicer application started with --testing; False outside the application."""
    app = getattr(slicer, "app", None)
    if app is None:
        return False
    try:
        return bool(app.commandOptions().testingEnabled)
    except AttributeError:
        return bool(app.testingEnabled())


def _inApplication() -> bool:
    return getattr(slicer, "app", None) is not None


def _unsupportedVersionMessage():
    """The warning shown when this Slicer is older than the oldest supported one (None otherwise)."""
    app = getattr(slicer, "app", None)
    return compat.unsupportedVersionMessage(app.applicationVersion) if app is not None else None


def _loadTerminology() -> None:
    """Load the module's terminology context into Slicer's Terminologies module (start-up, and each Logic)."""
    modules = getattr(slicer, "modules", None)
    terminologies = getattr(modules, "terminologies", None) if modules is not None else None
    if terminologies is not None and not terminology.loadContext(terminologies.logic()):
        logging.warning("SpineAnalysis: the terminology context %s could not be loaded", terminology.contextPath())


#
# SpineAnalysis
#


class SpineAnalysis(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Spine Analysis")
        self.parent.categories = ["Segmentation", "Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["SpineAnalysis developers"]
        self.parent.helpText = _(
            """
Segments a lumbar spine MRI into named vertebral bodies and intervertebral discs, lets you review and
correct the segmentation (Segment Editor, level shift, rename), and measures every level: disc heights,
BianqueNet disc indices (DH, DHI, HDR, delta SI) with normative z-scores and a Pfirrmann estimate,
vertebral heights, wedge and biconcavity ratios with the Genant grade, slip, lordosis, sacral slope and
Cobb angle. Measurements update after each correction.
<br><br>
Results are research measurements, not a diagnosis.
"""
        )
        unsupported = _unsupportedVersionMessage()
        if unsupported:
            logging.error(unsupported)
            self.parent.helpText += "<br><br><b>" + unsupported + "</b>"
        if _inApplication():  # the Terminologies module's logic exists once start-up has finished
            slicer.app.connect("startupCompleted()", _loadTerminology)
        self.parent.acknowledgementText = _(
            """
The segmentation model was trained on public lumbar MRI collections gathered in the FastCleverSeg repository
(J. Ramos et al.): MyoSegmenTUM spine (TU Munich), the lower-spine T2 data of Chu et al., the University of
Siegen multi-centre lumbar MR data (Zukic et al.) and the intervertebral disc data of Menezes-Reis et al.
Disc parameters and healthy reference values follow BianqueNet (Zheng et al., Nature Communications 13:841,
2022). Vertebra numbering follows VerSe (Sekuboyina et al., Medical Image Analysis 2021).
"""
        )


#
# SpineAnalysisParameterNode
#


@parameterNodeWrapper
class SpineAnalysisParameterNode:
    """State of the module, saved with the scene.

    inputVolume - the MRI to segment and measure.
    model - model name ("default": the model shipped with the extension).
    device - where the network runs: "auto" (GPU when available), "cpu" or "cuda".
    segmentation - the named vertebrae and discs (output of the model, or loaded, then corrected).
    table - the measurement table.
    sex, age - for normative z-scores ("unknown" / 0: not used).
    autoUpdate - recompute the measurements of edited levels after each change.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    model: Annotated[str, Default("default")]
    device: Annotated[str, Choice(list(DEVICES)), Default("auto")]
    segmentation: vtkMRMLSegmentationNode
    table: vtkMRMLTableNode
    sex: Annotated[str, Choice(list(SEXES)), Default("unknown")]
    age: Annotated[int, WithinRange(0, 120), Default(0)]
    autoUpdate: Annotated[bool, Default(True)]


#
# SpineAnalysisWidget
#


class SpineAnalysisWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: each control calls one method of :class:`SpineAnalysisLogic`."""

    POLL_INTERVAL_MS = 200
    RECOMPUTE_DELAY_MS = 800

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._pollTimer = None
        self._recomputeTimer = None

    # -- set-up -------------------------------------------------------------------------------------
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpineAnalysis.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        unsupported = _unsupportedVersionMessage()
        if unsupported:
            warning = qt.QLabel(unsupported)
            warning.wordWrap = True
            warning.setStyleSheet("QLabel { color: #b00020; font-weight: bold; }")
            self.layout.insertWidget(0, warning)
        # one error dialog per failure (slicer.util.tryWithErrorDisplay re-raises: nested blocks showed two)
        self._errors = feedback.ErrorReporter(
            display=lambda message, details: slicer.util.errorDisplay(message, detailedText=details),
            setWaitCursor=lambda: slicer.app.setOverrideCursor(qt.Qt.WaitCursor),
            restoreCursor=slicer.app.restoreOverrideCursor,
        )

        self.logic = SpineAnalysisLogic()
        self.logic.pendingChangedCallback = self._onPendingChanged

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(self.POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self._onPollJob)
        self._recomputeTimer = qt.QTimer()
        self._recomputeTimer.setSingleShot(True)
        self._recomputeTimer.setInterval(self.RECOMPUTE_DELAY_MS)
        self._recomputeTimer.connect("timeout()", self._onRecompute)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.measureButton.connect("clicked(bool)", self.onMeasureButton)
        self.ui.loadFilesButton.connect("clicked(bool)", self.onLoadFilesButton)
        self.ui.editSegmentationButton.connect("clicked(bool)", self.onEditSegmentationButton)
        self.ui.shiftUpButton.connect("clicked(bool)", lambda: self.onShiftLevels(-1))
        self.ui.shiftDownButton.connect("clicked(bool)", lambda: self.onShiftLevels(+1))
        self.ui.renameButton.connect("clicked(bool)", self.onRenameButton)
        self.ui.undoRenameButton.connect("clicked(bool)", self.onUndoRenameButton)
        self.ui.show3DButton.connect("clicked(bool)", self.onShow3DButton)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsvButton)
        self.ui.saveSegmentationButton.connect("clicked(bool)", self.onSaveSegmentationButton)
        self.ui.resultsTableView.connect("selectionChanged()", self.onTableSelectionChanged)
        self.ui.loadDicomFolderButton.connect("clicked(bool)", self.onLoadDicomFolderButton)
        self.ui.modelComboBox.connect("activated(int)", self.onModelChosen)
        self.ui.exportTrainingCaseButton.connect("clicked(bool)", self.onExportTrainingCaseButton)
        self.ui.saveDicomSegButton.connect("clicked(bool)", self.onSaveDicomSegButton)
        self._refreshModels()

        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self._job = None
        if self.logic is not None:
            self.logic.stopObserving()
        self.removeObservers()

    def enter(self) -> None:
        self._refreshModels()
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode.parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        if self._job is not None:
            self._job.cancel()
            self._finishJobUi()
        self.logic.stopObserving()
        self.logic.clearMeasurements()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        reloadLibrary()
        ScriptedLoadableModuleWidget.onReload(self)

    # -- parameter node -----------------------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode.parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # widgets with a "SlicerParameterName" property in the .ui file are connected here
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode.parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self._updateGui()

    def _updateGui(self, caller=None, event=None) -> None:
        parameters = self._parameterNode
        running = self._job is not None
        if parameters and not running:
            # another volume selected: its own segmentation (the newest), never the previous volume's
            matching = self.logic.segmentationForVolume(parameters.inputVolume, parameters.segmentation)
            if matching is not parameters.segmentation:
                parameters.segmentation = matching
                return  # the parameter node's Modified event runs _updateGui again
            with self._errors.action(_("Failed to update the z-scores for the new sex or age.")):
                self.logic.rescoreIfSubjectChanged(parameters.segmentation, parameters.inputVolume, parameters.table, **self._subject())
        hasVolume = bool(parameters and parameters.inputVolume)
        hasSegmentation = bool(parameters and parameters.segmentation)
        self.ui.applyButton.text = _("Cancel") if running else _("Segment and measure")
        self.ui.applyButton.enabled = running or hasVolume
        self.ui.applyButton.toolTip = (
            _("Stop the segmentation") if running else _("Run the model on the input volume, then measure") if hasVolume else _("Select an input volume")
        )
        for button in (self.ui.measureButton, self.ui.editSegmentationButton, self.ui.shiftUpButton, self.ui.shiftDownButton,
                       self.ui.renameButton, self.ui.show3DButton, self.ui.saveSegmentationButton):
            button.enabled = hasSegmentation and not running
        self.ui.measureButton.enabled = hasSegmentation and hasVolume and not running
        self.ui.exportCsvButton.enabled = bool(parameters and parameters.table) and not running
        self.ui.exportTrainingCaseButton.enabled = hasSegmentation and hasVolume and not running
        fromDicom = hasVolume and self.logic.hasDicomSource(parameters.inputVolume)
        self.ui.saveDicomSegButton.enabled = hasSegmentation and fromDicom and not running
        self.ui.saveDicomSegButton.toolTip = (
            _("Write the segmentation as DICOM SEG referencing the source series") if fromDicom else _("Load the volume from DICOM first (DICOM browser or 'Load DICOM folder...')")
        )
        self.ui.undoRenameButton.enabled = hasSegmentation and not running and self.logic.canUndoRelabel(parameters.segmentation)
        self.ui.qualityLabel.text = self.logic.qualityText(parameters.table) if parameters else ""
        self.ui.qualityLabel.visible = bool(self.ui.qualityLabel.text)
        if parameters:
            index = self.ui.modelComboBox.findData(parameters.model)
            if self.ui.modelComboBox.currentIndex != index:
                self.ui.modelComboBox.setCurrentIndex(index)  # -1 (blank) for a model typed as a folder path
        if hasSegmentation:
            names = self.logic.vertebraNames(parameters.segmentation)
            if names != [self.ui.renameSourceComboBox.itemText(i) for i in range(self.ui.renameSourceComboBox.count)]:
                self.ui.renameSourceComboBox.clear()
                self.ui.renameSourceComboBox.addItems(names)
        if parameters and parameters.table and self.ui.resultsTableView.mrmlTableNode() != parameters.table:
            self.ui.resultsTableView.setMRMLTableNode(parameters.table)
        if parameters and hasSegmentation and hasVolume and parameters.autoUpdate:
            self.logic.observeSegmentation(parameters.segmentation, parameters.inputVolume, parameters.table, **self._subject())
        else:
            self.logic.stopObserving()

    def _subject(self) -> dict:
        return {"sex": self._parameterNode.sex, "age": self._parameterNode.age}

    # -- segmentation (background process) ----------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self._log(_("Segmentation cancelled."))
            self._finishJobUi()
            return
        parameters = self._parameterNode
        existing = self.logic.segmentationsOfVolume(parameters.inputVolume)
        if existing and not slicer.util.confirmOkCancelDisplay(
            _("{volume} already has a segmentation ({names}).\nSegment it again into a new segmentation? "
              "The existing one, with all its corrections, is kept.").format(
                volume=parameters.inputVolume.GetName(), names=", ".join(node.GetName() for node in existing))
        ):  # fmt: skip
            return
        # dialogs (ours, pip's) without the wait cursor; a failed install is reported once
        with self._errors.action(_("Failed to install the model's Python packages.")):
            if not self.logic.ensureDependencies(askConfirmation=True):
                self._log(_("The model's Python packages are not installed: segmentation not started."))
                return
        with self._errors.action(_("Failed to start the segmentation."), waitCursor=True):
            self.ui.logTextEdit.clear()
            self.ui.progressBar.value = 0
            self._job = self.logic.runSegmentation(parameters.inputVolume, parameters.model, parameters.device, synchronous=False)
            self._log(_("Segmenting {name}...").format(name=parameters.inputVolume.GetName()))
            self._pollTimer.start()
            self._updateGui()

    def _onPollJob(self) -> None:
        job = self._job
        if job is None:
            self._pollTimer.stop()
            return
        for event in job.poll():
            if event.is_progress:
                self.ui.progressBar.value = int(round(100 * event.fraction))
                self.ui.statusLabel.text = event.message
            else:
                self._log(event.line)
        if job.is_running:
            return
        try:
            with self._errors.action(_("The segmentation did not complete."), waitCursor=True):
                parameters = self._parameterNode
                segmentation, table = self.logic.completeSegmentation(job, **self._subject())
                parameters.segmentation = segmentation
                parameters.table = table
                self._log(_("Done: {name}").format(name=segmentation.GetName()))
        finally:
            job.cleanup()
            self._finishJobUi()

    def _finishJobUi(self) -> None:
        self._job = None
        self._pollTimer.stop()
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = ""
        self._updateGui()

    def _log(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    # -- models and the annotators' loop ---------------------------------------------------------------
    def _refreshModels(self) -> None:
        combo = self.ui.modelComboBox
        combo.clear()
        for text, model in self.logic.availableModels():
            combo.addItem(text, model)

    def onModelChosen(self, index: int) -> None:
        model = self.ui.modelComboBox.itemData(index)
        if self._parameterNode and model:
            self._parameterNode.model = model

    def onExportTrainingCaseButton(self) -> None:
        parameters = self._parameterNode
        folder = self.ui.trainingDatasetPathLineEdit.currentPath
        if not folder:
            folder = qt.QFileDialog.getExistingDirectory(self.parent, _("Training dataset folder (imagesTr/, labelsTr/, dataset.json)"))
            if not folder:
                return
            self.ui.trainingDatasetPathLineEdit.currentPath = folder
        with self._errors.action(_("Failed to export the training case."), waitCursor=True):
            result = self.logic.exportTrainingCase(parameters.segmentation, parameters.inputVolume, folder, self.ui.caseIdLineEdit.text.strip() or None)
            self.ui.trainingDatasetPathLineEdit.addCurrentPathToHistory()
            edited = ", ".join(result.provenance["edited_structures"]) or (_("none") if result.provenance["original_available"] else _("unknown (no model output kept)"))
            self._log(_("Exported case {case} to {folder}; edited: {edited}").format(case=result.case_id, folder=folder, edited=edited))

    # -- actions --------------------------------------------------------------------------------------
    def onLoadDicomFolderButton(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(self.parent, _("Folder with one DICOM series"))
        if not folder:
            return
        with self._errors.action(_("Failed to load the DICOM series."), waitCursor=True):
            volume, _segmentation = self.logic.loadInputs(folder)
            self._parameterNode.inputVolume = volume
            slicer.util.setSliceViewerLayers(background=volume, fit=True)

    def onLoadFilesButton(self) -> None:
        imagePath = qt.QFileDialog.getOpenFileName(self.parent, _("MRI volume"), "", _("Images (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd)"))
        if not imagePath:
            return
        labelPath = qt.QFileDialog.getOpenFileName(
            self.parent, _("Label map (optional)"), os.path.dirname(imagePath), _("Label maps (*.nii *.nii.gz *.nrrd *.seg.nrrd *.mha *.dcm)")
        )
        if labelPath and labelPath.lower().endswith(".dcm"):
            with self._errors.action(_("Failed to install highdicom for DICOM SEG.")):
                if not self.logic.ensureDependencies(askConfirmation=True, requirements=DICOM_SEG_REQUIREMENTS):
                    return
        with self._errors.action(_("Failed to load the files."), waitCursor=True):
            volume, segmentation = self.logic.loadInputs(imagePath, labelPath or None)
            self._parameterNode.inputVolume = volume
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
            if segmentation is not None:
                parameters = self._parameterNode
                parameters.segmentation = segmentation
                parameters.table = self.logic.updateTable(segmentation, volume, None, **self._subject())

    def onMeasureButton(self) -> None:
        with self._errors.action(_("Failed to measure."), waitCursor=True):
            parameters = self._parameterNode
            parameters.table = self.logic.updateTable(parameters.segmentation, parameters.inputVolume, parameters.table, **self._subject())

    def onEditSegmentationButton(self) -> None:
        parameters = self._parameterNode
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(parameters.segmentation)
        editor.setSourceVolumeNode(parameters.inputVolume)

    def onShiftLevels(self, delta: int) -> None:
        with self._errors.action(_("Failed to shift the levels."), waitCursor=True):
            renamed = self.logic.shiftLevels(self._parameterNode.segmentation, delta)
            self._log(_("Renamed: ") + ", ".join(f"{old} -> {new}" for old, new in renamed.items()))
            self._updateGui()

    def onRenameButton(self) -> None:
        with self._errors.action(_("Failed to rename the vertebra."), waitCursor=True):
            renamed = self.logic.renameVertebra(
                self._parameterNode.segmentation, self.ui.renameSourceComboBox.currentText, self.ui.renameTargetLineEdit.text
            )
            self._log(_("Renamed: ") + ", ".join(f"{old} -> {new}" for old, new in renamed.items()))
            self._updateGui()

    def onUndoRenameButton(self) -> None:
        with self._errors.action(_("Failed to undo the rename.")):
            renamed = self.logic.undoRelabel(self._parameterNode.segmentation)
            self._log(_("Renamed back: ") + ", ".join(f"{old} -> {new}" for old, new in renamed.items()))
            self._updateGui()

    def onShow3DButton(self) -> None:
        self.logic.show3D(self._parameterNode.segmentation)
        layoutManager = slicer.app.layoutManager()
        if layoutManager and layoutManager.threeDWidget(0):
            layoutManager.threeDWidget(0).threeDView().resetFocalPoint()

    def onExportCsvButton(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(self.parent, _("Folder for measurements.csv / .json"))
        if not folder:
            return
        with self._errors.action(_("Failed to export the measurements."), waitCursor=True):
            parameters = self._parameterNode
            try:
                csvPath, _jsonPath = self.logic.exportMeasurements(parameters.table, folder, parameters.inputVolume)
            except FileExistsError as exists:
                if not slicer.util.confirmYesNoDisplay(_("{files}. Replace them?").format(files=exists)):
                    return
                csvPath, _jsonPath = self.logic.exportMeasurements(parameters.table, folder, parameters.inputVolume, overwrite=True)
            self._log(_("Wrote {path}").format(path=csvPath))
            if any(self.logic.dicomIdentifiers(self._parameterNode.inputVolume).values()):
                path = self.logic.exportStructuredMeasurements(
                    self._parameterNode.table, self._parameterNode.inputVolume, os.path.join(folder, "measurements_dicom.csv")
                )
                self._log(_("Wrote {path}").format(path=path))

    def onSaveSegmentationButton(self) -> None:
        segmentation = self._parameterNode.segmentation
        path = qt.QFileDialog.getSaveFileName(
            self.parent, _("Save segmentation"), segmentation.GetName() + ".seg.nrrd", _("Segmentation (*.seg.nrrd)")
        )
        if not path:
            return
        with self._errors.action(_("Failed to save the segmentation."), waitCursor=True):
            self._log(_("Wrote {path}").format(path=self.logic.saveSegmentation(segmentation, path)))

    def onSaveDicomSegButton(self) -> None:
        parameters = self._parameterNode
        path = qt.QFileDialog.getSaveFileName(self.parent, _("Save as DICOM SEG"), parameters.segmentation.GetName() + ".dcm", _("DICOM (*.dcm)"))
        if not path:
            return
        with self._errors.action(_("Failed to install highdicom for DICOM SEG.")):
            if not self.logic.ensureDependencies(askConfirmation=True, requirements=DICOM_SEG_REQUIREMENTS):
                return
        with self._errors.action(_("Failed to write the DICOM SEG."), waitCursor=True):
            self._log(_("Wrote {path}").format(path=self.logic.exportDicomSeg(parameters.segmentation, parameters.inputVolume, path)))

    def onTableSelectionChanged(self) -> None:
        parameters = self._parameterNode
        index = self.ui.resultsTableView.currentIndex()
        if not index.isValid() or not parameters.segmentation:
            return
        name = index.sibling(index.row(), 0).data()  # first column: the structure's name
        if name and self.logic.segmentIdByName(parameters.segmentation, name):
            self.logic.jumpToLevel(parameters.segmentation, name)

    # -- automatic recomputation after edits ---------------------------------------------------------
    def _onPendingChanged(self) -> None:
        self._recomputeTimer.start()  # restarts: edits closer together than the delay are measured once

    def _onRecompute(self) -> None:
        try:
            table = self.logic.recomputeDirty()
        except Exception as error:  # noqa: BLE001 - shown in the module's log, never stops editing
            logging.exception("SpineAnalysis: recomputing the measurements failed")
            self._log(_("Measurement update failed: {error}").format(error=error))
            return
        if table is not None and self._parameterNode and self._parameterNode.table != table:
            self._parameterNode.table = table


#
# SpineAnalysisLogic
#


class SegmentationJob:
    """A segmentation running in a background process (see :meth:`SpineAnalysisLogic.startSegmentation`)."""

    def __init__(self, process: BackgroundProcess, workDir: str, volumeNodeID: str, outputPath: str):
        self.process = process
        self.workDir = workDir
        self.volumeNodeID = volumeNodeID
        self.outputPath = outputPath

    def poll(self):
        """New output of the process: a list of ``SpineAnalysisLib.background.ProgressEvent``."""
        return self.process.poll()

    @property
    def is_running(self) -> bool:
        return self.process.is_running

    @property
    def succeeded(self) -> bool:
        return self.process.succeeded and os.path.isfile(self.outputPath)

    @property
    def progress(self) -> float:
        return self.process.progress

    @property
    def message(self) -> str:
        return self.process.message

    def failureMessage(self) -> str:
        if self.process.cancelled:
            return _("The segmentation was cancelled.")
        tail = self.process.output_tail(8)
        return _("The segmentation process failed (exit status {code}).").format(code=self.process.returncode) + ("\n" + tail if tail else "")

    def wait(self, timeout=None):
        return self.process.wait(timeout)

    def cancel(self) -> None:
        self.process.cancel()
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.workDir, ignore_errors=True)


class SpineAnalysisLogic(ScriptedLoadableModuleLogic):
    """Scene-side work of the module; usable from scripts and tests without the GUI."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.pendingChangedCallback = None  # set by the widget: restarts its debounce timer
        # table key (attribute MEASUREMENTS_KEY_ATTRIBUTE) -> Measurement list shown in that table; not the
        # node ID: a new scene reuses node IDs, and its tables must not export the previous case's numbers
        self._measurements = {}
        self._observed = None  # state of the observed segmentation (see observeSegmentation)
        self._suppressEvents = 0
        _loadTerminology()

    def getParameterNode(self):
        return SpineAnalysisParameterNode(super().getParameterNode())

    # -- colour table and terminology ---------------------------------------------------------------
    def getColorTableNode(self):
        """The colour table of the label scheme (label value -> name, colour, terminology); created once per scene."""
        scene = slicer.mrmlScene
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")):
            node = scene.GetNthNodeByClass(index, "vtkMRMLColorTableNode")
            if node.GetAttribute(COLOR_TABLE_ATTRIBUTE) == "1":
                return node
        node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", COLOR_TABLE_NAME)
        node.SetAttribute(COLOR_TABLE_ATTRIBUTE, "1")
        self._fillColorTable(node, {label: scheme.structure_name(label) for label in scheme.all_labels()})
        return node

    @staticmethod
    def _fillColorTable(node, names: dict) -> None:
        """Make ``node`` a table of ``names`` (label value -> name) with the scheme's colours and codes."""
        wasModified = node.StartModify()
        node.SetTypeToUser()
        node.SetNumberOfColors(max(names) + 1 if names else 1)
        node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
        for index in range(1, node.GetNumberOfColors()):
            node.SetColor(index, "", 0.0, 0.0, 0.0, 0.0)
            node.SetColorDefined(index, False)  # Slicer >= 5.4
        for label, name in names.items():
            structure = scheme.structure(label)
            node.SetColor(label, name, *structure.color, 1.0)
            if hasattr(node, "SetTerminology"):  # colour tables carry terminology in newer Slicer versions only
                node.SetTerminology(label, *CATEGORY_CODE, "SCT", structure.snomed_code, structure.snomed_meaning)
        node.EndModify(wasModified)

    @staticmethod
    def terminologyEntry(label: int, name: str | None = None) -> str:
        """Slicer's serialised terminology entry (category, type, anatomic context) of a scheme label.

        ``name`` keeps a disc's own neighbours ("L5-L6" gets the generic disc code, not L5/S1's).
        """
        return terminology.serializedEntry(label, name)

    @staticmethod
    def labelOfSegment(segment):
        """Scheme label of a segment from its name ("L4" -> 23, "L4-L5" -> 123); None for other segments."""
        try:
            return scheme.label_from_name(segment.GetName())
        except ValueError:
            return None

    def applySchemeToSegment(self, segment):
        """Set colour and terminology of a segment from its name; returns its scheme label or None."""
        label = self.labelOfSegment(segment)
        if label is None:
            return None
        structure = scheme.structure(label)
        self._suppressEvents += 1
        try:
            segment.SetColor(*structure.color)
            compat.setSegmentTerminology(segment, self.terminologyEntry(label, segment.GetName()))
            # Not SetLabelValue: that is the segment's value inside its shared labelmap layer, and changing it
            # without the voxels hands the segment other voxels. Label values come from names on export.
        finally:
            self._suppressEvents -= 1
        return label

    def applyScheme(self, segmentationNode) -> None:
        """Apply :meth:`applySchemeToSegment` to every segment and order segments cranial to caudal."""
        segmentation = segmentationNode.GetSegmentation()
        ranked = []
        for segmentId in self.segmentIds(segmentationNode):
            label = self.applySchemeToSegment(segmentation.GetSegment(segmentId))
            rank = scheme.anatomical_rank(label) if label is not None and (scheme.is_vertebra(label) or scheme.is_disc(label)) else 1e3 + (label or 1e3)
            ranked.append((rank, segmentId))
        self._suppressEvents += 1
        try:
            for index, (_rank, segmentId) in enumerate(sorted(ranked)):
                if segmentation.GetSegmentIndex(segmentId) != index:
                    segmentation.SetSegmentIndex(segmentId, index)
        finally:
            self._suppressEvents -= 1

    # -- segments -----------------------------------------------------------------------------------
    @staticmethod
    def segmentIds(segmentationNode) -> list:
        segmentation = segmentationNode.GetSegmentation()
        return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]

    def segmentIdByName(self, segmentationNode, name: str):
        """ID of the segment called ``name`` (also "L4/L5" for "L4-L5"); None when there is none."""
        segmentation = segmentationNode.GetSegmentation()
        for segmentId in self.segmentIds(segmentationNode):
            if segmentation.GetSegment(segmentId).GetName() == name:
                return segmentId
        try:
            wanted = scheme.label_from_name(name)
        except ValueError:
            return None
        for segmentId in self.segmentIds(segmentationNode):
            if self.labelOfSegment(segmentation.GetSegment(segmentId)) == wanted:
                return segmentId
        return None

    def segmentLabels(self, segmentationNode) -> dict:
        """Segment ID -> scheme label for the segments whose names belong to the scheme."""
        segmentation = segmentationNode.GetSegmentation()
        result = {}
        for segmentId in self.segmentIds(segmentationNode):
            label = self.labelOfSegment(segmentation.GetSegment(segmentId))
            if label is not None:
                result[segmentId] = label
        return result

    def vertebraNames(self, segmentationNode) -> list:
        """Names of the vertebra segments, cranial to caudal."""
        labels = sorted((label for label in self.segmentLabels(segmentationNode).values() if scheme.is_vertebra(label)), key=scheme.anatomical_rank)
        return [scheme.vertebra_name(label) for label in labels]

    # -- volumes <-> SimpleITK ----------------------------------------------------------------------
    @staticmethod
    def volumeNodeToSitk(volumeNode) -> sitk.Image:
        """The voxels and patient-space geometry of a volume node as a SimpleITK image (LPS).

        A linear parent transform is applied to the geometry; a non-linear one must be hardened first.
        """
        if volumeNode is None or volumeNode.GetImageData() is None:
            raise spineErrors.InputError(_("the volume has no voxels"))
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        transformNode = volumeNode.GetParentTransformNode()
        if transformNode is not None:
            if not transformNode.IsTransformToWorldLinear():
                raise spineErrors.InputError(_("{name} is under a non-linear transform: harden it first").format(name=volumeNode.GetName()))
            toWorld = vtk.vtkMatrix4x4()
            transformNode.GetMatrixTransformToWorld(toWorld)
            vtk.vtkMatrix4x4.Multiply4x4(toWorld, ijkToRas, ijkToRas)
        matrix = slicer.util.arrayFromVTKMatrix(ijkToRas)
        rasToLps = np.diag([-1.0, -1.0, 1.0])
        axes = rasToLps @ matrix[:3, :3]
        spacing = np.linalg.norm(axes, axis=0)
        array = slicer.util.arrayFromVolume(volumeNode)
        if array.ndim != 3:
            raise spineErrors.InputError(_("{name} is not a scalar 3D volume").format(name=volumeNode.GetName()))
        image = sitk.GetImageFromArray(np.array(array, copy=True))
        image.SetSpacing(tuple(float(s) for s in spacing))
        image.SetOrigin(tuple(float(v) for v in rasToLps @ matrix[:3, 3]))
        image.SetDirection(tuple(float(v) for v in (axes / spacing).ravel()))
        return image

    @staticmethod
    def sitkToVolumeNode(image: sitk.Image, volumeNode=None, name: str | None = None, labelmap: bool = False):
        """Put a SimpleITK image (LPS) into a volume node (created when not given), geometry included."""
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise spineErrors.InputError(_("a scalar 3D image is needed"))
        rasToLps = np.diag([-1.0, -1.0, 1.0])
        direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
        matrix = np.eye(4)
        matrix[:3, :3] = rasToLps @ direction @ np.diag(image.GetSpacing())
        matrix[:3, 3] = rasToLps @ np.asarray(image.GetOrigin(), dtype=float)
        array = sitk.GetArrayFromImage(image)
        if labelmap:
            array = array.astype(np.uint16 if array.max(initial=0) < 65536 and array.min(initial=0) >= 0 else np.int32)
        elif array.dtype in (np.int64, np.uint64):
            array = array.astype(np.float64)
        if volumeNode is None:
            className = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
            volumeNode = slicer.mrmlScene.AddNewNodeByClass(className, name or "")
        elif name:
            volumeNode.SetName(name)
        volumeNode.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
        slicer.util.updateVolumeFromArray(volumeNode, array)
        volumeNode.CreateDefaultDisplayNodes()
        return volumeNode

    # -- loading ------------------------------------------------------------------------------------
    @staticmethod
    def _baseName(path: str) -> str:
        name = os.path.basename(os.path.normpath(path))
        for suffix in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return name

    def loadInputs(self, imagePath: str, labelPath: str | None = None):
        """Load an MRI (file or DICOM folder) and optionally its label map (label image, .seg.nrrd or DICOM SEG .dcm).

        Returns ``(volumeNode, segmentationNode)``; the segmentation is None without ``labelPath``.
        Segment names, colours and terminology come from the label scheme.
        """
        imagePath = os.fspath(imagePath)
        name = self._baseName(imagePath)
        if os.path.isdir(imagePath):
            image = spineIO.read_image(imagePath)
            volumeNode = self.sitkToVolumeNode(image, name=name)
            for attribute, value in spineIO.dicom_identifiers(image).items():  # kept for the structured measurement export
                if value:
                    volumeNode.SetAttribute(f"DICOM.{attribute}", value)
            volumeNode.SetAttribute(DICOM_FOLDER_ATTRIBUTE, os.path.abspath(imagePath))  # the source series of a DICOM SEG
        else:
            if not os.path.isfile(imagePath):
                raise spineErrors.InputError(f"{imagePath}: no such file")
            volumeNode = slicer.modules.volumes.logic().AddArchetypeVolume(imagePath, name, 0)
            if volumeNode is None:
                raise spineErrors.InputError(f"{imagePath}: Slicer could not read this image")
        if not labelPath:
            return volumeNode, None
        labelPath = os.fspath(labelPath)
        if not os.path.isfile(labelPath):
            raise spineErrors.InputError(f"{labelPath}: no such file")
        if labelPath.lower().endswith(".dcm"):  # a DICOM SEG of this image
            dicomseg = importlib.import_module("SpineAnalysisLib.dicomseg")
            labelImage, names = dicomseg.read_dicom_seg(labelPath, self.volumeNodeToSitk(volumeNode))
            segmentationNode = self.importLabelMap(labelImage, volumeNode, name=f"{name} segmentation")
            segmentation = segmentationNode.GetSegmentation()
            for segmentId, label in self.segmentLabels(segmentationNode).items():
                segment = segmentation.GetSegment(segmentId)
                if names.get(label) and segment.GetName() != names[label]:  # e.g. "L5-L6" above a transitional L6
                    segment.SetName(names[label])
                    self.applySchemeToSegment(segment)
            return volumeNode, segmentationNode
        if labelPath.lower().endswith(".seg.nrrd"):
            segmentationNode = slicer.modules.segmentations.logic().LoadSegmentationFromFile(labelPath, True)
            if segmentationNode is None:
                raise spineErrors.InputError(f"{labelPath}: Slicer could not read this segmentation")
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            self.applyScheme(segmentationNode)
            self._placeNextTo(segmentationNode, volumeNode)
            return volumeNode, segmentationNode
        labelNode = slicer.modules.volumes.logic().AddArchetypeVolume(labelPath, self._baseName(labelPath), 1)
        if labelNode is None:
            raise spineErrors.InputError(f"{labelPath}: Slicer could not read this label map")
        try:
            segmentationNode = self.importLabelMap(labelNode, volumeNode, name=f"{name} segmentation")
        finally:
            self._removeNode(labelNode)
        return volumeNode, segmentationNode

    def importLabelMap(self, labelMap, volumeNode, segmentationNode=None, name: str | None = None):
        """Turn a label map (SimpleITK image or labelmap volume node) into named segments.

        The label values must belong to the scheme. ``segmentationNode`` is emptied and refilled when
        given (scripts only: the module's own actions always create a new node), otherwise created. The
        input volume becomes the segmentation's reference geometry.
        """
        ownsNode = isinstance(labelMap, sitk.Image)
        labelImage = labelMap if ownsNode else self.volumeNodeToSitk(labelMap)
        spineIO.check_label_map(labelImage, what=_("label map"))  # scheme labels only, not empty
        labelNode = self.sitkToVolumeNode(labelImage, name="__SpineAnalysisLabels__", labelmap=True) if ownsNode else labelMap
        try:
            labelNode.CreateDefaultDisplayNodes()
            labelNode.GetDisplayNode().SetAndObserveColorNodeID(self.getColorTableNode().GetID())
            if segmentationNode is None:
                segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or f"{volumeNode.GetName()} segmentation")
                segmentationNode.CreateDefaultDisplayNodes()
            else:
                self._suppressEvents += 1
                try:
                    segmentationNode.GetSegmentation().RemoveAllSegments()
                finally:
                    self._suppressEvents -= 1
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelNode, segmentationNode):
                raise spineErrors.InputError(_("the label map could not be imported into a segmentation"))
        finally:
            if ownsNode:
                self._removeNode(labelNode)
        self.applyScheme(segmentationNode)
        self._placeNextTo(segmentationNode, volumeNode)
        self._markAllDirty(segmentationNode)
        return segmentationNode

    @staticmethod
    def _removeNode(node) -> None:
        if node is None or node.GetScene() is None:
            return
        for index in range(node.GetNumberOfDisplayNodes()):
            displayNode = node.GetNthDisplayNode(index)
            if displayNode is not None:
                slicer.mrmlScene.RemoveNode(displayNode)
        storageNode = node.GetStorageNode() if hasattr(node, "GetStorageNode") else None
        if storageNode is not None:
            slicer.mrmlScene.RemoveNode(storageNode)
        slicer.mrmlScene.RemoveNode(node)

    @staticmethod
    def _placeNextTo(node, volumeNode) -> None:
        """Put ``node`` in the same subject hierarchy folder (patient/study) as ``volumeNode``."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        if shNode is None or volumeNode is None:
            return
        volumeItem = shNode.GetItemByDataNode(volumeNode)
        item = shNode.GetItemByDataNode(node)
        if volumeItem and item:
            shNode.SetItemParent(item, shNode.GetItemParent(volumeItem))

    # -- segmentation -> label map ------------------------------------------------------------------
    def segmentationToLabelArray(self, segmentationNode, volumeNode) -> np.ndarray:
        """Label values (scheme ids, from segment names) on the volume's voxel grid, as a (k, j, i) array.

        Segments whose names are not in the scheme are left out.
        """
        labels = self.segmentLabels(segmentationNode)
        if not labels:
            return np.zeros(slicer.util.arrayFromVolume(volumeNode).shape, dtype=np.uint16)
        # A colour table naming each segment by its current name maps segment names to label values.
        segmentation = segmentationNode.GetSegmentation()
        colorTable = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLColorTableNode", "__SpineAnalysisExport__")
        labelNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__SpineAnalysisExport__")
        try:
            colorTable.SetTypeToUser()
            colorTable.SetNumberOfColors(max(labels.values()) + 1)
            for index in range(colorTable.GetNumberOfColors()):
                colorTable.SetColor(index, "", 0.0, 0.0, 0.0, 0.0)
                colorTable.SetColorDefined(index, False)
            for segmentId, label in labels.items():
                colorTable.SetColor(label, segmentation.GetSegment(segmentId).GetName(), 1.0, 1.0, 1.0, 1.0)
            ok = slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
                segmentationNode, list(labels), labelNode, volumeNode, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, colorTable
            )
            if not ok:
                raise spineErrors.InputError(_("the segmentation could not be exported to a label map"))
            array = np.array(slicer.util.arrayFromVolume(labelNode), dtype=np.uint16, copy=True)
        finally:
            self._removeNode(labelNode)
            slicer.mrmlScene.RemoveNode(colorTable)
        return array

    def segmentationToLabelMap(self, segmentationNode, volumeNode) -> sitk.Image:
        """:meth:`segmentationToLabelArray` as a SimpleITK label map on the grid of ``volumeNode``."""
        reference = self.volumeNodeToSitk(volumeNode)
        return spineIO.label_map_like(self.segmentationToLabelArray(segmentationNode, volumeNode), reference)

    # -- measurements -------------------------------------------------------------------------------
    @staticmethod
    def _measurementsModule():
        return importlib.import_module("SpineAnalysisLib.measurements")

    def measure(self, segmentationNode, volumeNode, labels=None, sex=None, age=None) -> list:
        """``SpineAnalysisLib.measurements.measure_case`` on the current segmentation."""
        if segmentationNode is None or volumeNode is None:
            raise spineErrors.InputError(_("select an input volume and a segmentation"))
        image = self.volumeNodeToSitk(volumeNode)
        if not any(scheme.is_vertebra(label) for label in self.segmentLabels(segmentationNode).values()):
            return self.measureOtherScheme(segmentationNode, volumeNode, image, sex=sex, age=age).measurements
        labelMap = spineIO.label_map_like(self.segmentationToLabelArray(segmentationNode, volumeNode), image)
        return self._measurementsModule().measure_case(
            image, labelMap, sex=results_table.subject_sex(sex), age=results_table.subject_age(age), labels=(sorted(labels) if labels is not None else None)
        )

    def measureOtherScheme(self, segmentationNode, volumeNode, image, sex=None, age=None):
        """Segments named by another tool (SlicerTotalSegmentator's "vertebrae_L1" / "L1 vertebra" / SNOMED CT
        terminology, with its vertebrae_body segments as bodies): measured through
        ``SpineAnalysisLib.label_schemes.plan_segments`` and ``measure_segmentation`` (docs/label-schemes.md)."""
        from SpineAnalysisLib import label_schemes
        from SpineAnalysisLib.measure_segmentation import measure_segmentation

        segmentation = segmentationNode.GetSegmentation()
        plan = label_schemes.plan_segments(
            [(i, segmentation.GetSegment(i).GetName(), compat.segmentTerminology(segmentation.GetSegment(i))) for i in self.segmentIds(segmentationNode)]
        )
        labelMap, bodies = label_schemes.label_maps_from_segments(
            plan, lambda segmentId: slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode), image
        )
        return measure_segmentation(image, labelMap, label_scheme=plan.scheme, bodies=bodies,
                                    sex=results_table.subject_sex(sex), age=results_table.subject_age(age))

    @staticmethod
    def _rowKey(measurement):
        return (measurement.structure, measurement.level)

    def updateTable(self, segmentationNode, volumeNode, tableNode=None, labels=None, sex=None, age=None):
        """Measure and show the results in a table node (one row per structure); returns the table node.

        With ``labels`` only those structures are measured again; the other rows are kept. A table node
        is created (next to the volume in the subject hierarchy) when none is given.
        """
        measurements = self.measure(segmentationNode, volumeNode, labels=labels, sex=sex, age=age)
        if tableNode is None:
            tableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", f"{segmentationNode.GetName()} measurements")
            self._placeNextTo(tableNode, volumeNode)
        if labels is not None:
            # rows of the re-measured structures are replaced, the others kept (spine rows included:
            # measure_case only makes them for a full measurement, and recomputeDirty measures everything
            # again when a vertebra changed)
            wanted = set(labels)
            fresh = {self._rowKey(m) for m in measurements}
            previous = self._measurements.get(self._tableKey(tableNode), [])
            measurements = [m for m in previous if m.label not in wanted and self._rowKey(m) not in fresh] + list(measurements)
        key = self._tableKey(tableNode) or uuid.uuid4().hex
        tableNode.SetAttribute(MEASUREMENTS_KEY_ATTRIBUTE, key)
        tableNode.SetAttribute(SUBJECT_ATTRIBUTE, self._subjectText(sex, age))
        tableNode.SetAttribute(MODEL_ATTRIBUTE, segmentationNode.GetAttribute(MODEL_ATTRIBUTE) or "")
        self._measurements[key] = list(measurements)
        tableNode.SetAttribute(QUALITY_ATTRIBUTE, json.dumps(quality_checks.assess(measurements).to_dict()))
        self._fillTable(tableNode, measurements)
        state = self._observed
        if labels is None and state is not None and state["segmentationNodeID"] == segmentationNode.GetID():
            state["pending"] = set()  # everything was just measured
            state["full"] = False
            state["tableNodeID"] = tableNode.GetID()
            self._snapshot(segmentationNode)
        return tableNode

    @staticmethod
    def _tableKey(tableNode):
        return tableNode.GetAttribute(MEASUREMENTS_KEY_ATTRIBUTE) if tableNode is not None else None

    def clearMeasurements(self) -> None:
        """Forget every table's measurements (the widget calls it when the scene closes)."""
        self._measurements.clear()

    @staticmethod
    def _subjectText(sex, age) -> str:
        return f"{results_table.subject_sex(sex) or ''}|{results_table.subject_age(age) or ''}"

    def rescoreIfSubjectChanged(self, segmentationNode, volumeNode, tableNode, sex=None, age=None) -> bool:
        """Measure again when the table's z-scores were computed for another sex or age; True when it did.

        The z-scores and flags come from the library's normative reference (``measure_case``).
        """
        if tableNode is None or segmentationNode is None or volumeNode is None or not self._tableKey(tableNode):
            return False
        if tableNode.GetAttribute(SUBJECT_ATTRIBUTE) == self._subjectText(sex, age):
            return False
        self.updateTable(segmentationNode, volumeNode, tableNode, sex=sex, age=age)
        return True

    @staticmethod
    def qualityText(tableNode) -> str:
        """The case's quality banner ("Quality: review - reason; reason"); "" when the table carries none."""
        text = tableNode.GetAttribute(QUALITY_ATTRIBUTE) if tableNode is not None else None
        if not text:
            return ""
        try:
            quality = json.loads(text)
        except ValueError:
            return ""
        reasons = "; ".join(quality.get("reasons") or [])
        return _("Quality: {status}").format(status=quality.get("status", "?")) + (f" - {reasons}" if reasons else "")

    def measurementsOfTable(self, tableNode) -> list:
        """The Measurement objects shown in a table filled by :meth:`updateTable`, with the values as the table
        now shows them: a number edited in the table replaces the measured one (noted in the row's note)."""
        measured = self._measurements.get(self._tableKey(tableNode)) if tableNode is not None else None
        if not measured:
            return []
        table = tableNode.GetTable()
        names, types = table.GetColumnByName(STRUCTURE_COLUMN), table.GetColumnByName(TYPE_COLUMN)
        rows = {(types.GetValue(r), names.GetValue(r)): r for r in range(table.GetNumberOfRows())} if names and types else {}
        result = []
        for m in measured:
            column, row = table.GetColumnByName(m.parameter), rows.get(self._rowKey(m))
            if column is not None and row is not None and column.IsNumeric():
                shown = column.GetValue(row)
                shown = None if shown is None or math.isnan(shown) else float(shown)
                if (shown is None) != (m.value is None) or (shown is not None and not math.isclose(shown, m.value, rel_tol=1e-9, abs_tol=1e-9)):
                    note = f"edited in the table (measured: {'none' if m.value is None else f'{m.value:.6g}'})"
                    m = dataclasses.replace(m, value=shown, note="; ".join(n for n in (m.note, note) if n))
            result.append(m)
        return result

    @staticmethod
    def _rowSortKey(key):
        return results_table.row_sort_key(*key)

    @staticmethod
    def flagsOf(values: dict) -> str:
        """Text of the "outside normal range" column: the z-scores flagged by the library's one rule
        (``SpineAnalysisLib.measure.flags``), and a Genant grade above 0 (a deformity, not a reference interval)."""
        texts = normal_range.flags_of(values)
        grade = values.get("genant_grade")
        if grade is not None and not (isinstance(grade, float) and math.isnan(grade)) and grade > 0:
            texts.append(f"Genant grade {int(round(grade))}")
        return "; ".join(texts)

    def _fillTable(self, tableNode, measurements) -> None:
        rows = {}
        units = {}
        for m in measurements:
            row = rows.setdefault(self._rowKey(m), {"values": {}, "notes": []})
            row["values"][m.parameter] = m.value
            if m.note:
                row["notes"].append(f"{m.parameter}: {m.note}")
            if m.unit and m.parameter not in units:
                units[m.parameter] = m.unit
        parameters = results_table.column_order(m.parameter for m in measurements)
        keys = sorted(rows, key=self._rowSortKey)

        wasModified = tableNode.StartModify()
        tableNode.RemoveAllColumns()
        if hasattr(tableNode, "SetUseColumnTitleAsColumnHeader"):  # column titles: not in every supported version
            tableNode.SetUseColumnTitleAsColumnHeader(True)
        else:
            tableNode.SetUseColumnNameAsColumnHeader(True)
        table = tableNode.GetTable()
        textColumns = {}
        for name in (STRUCTURE_COLUMN, TYPE_COLUMN):
            textColumns[name] = vtk.vtkStringArray()
            textColumns[name].SetName(name)
        numberColumns = {}
        for parameter in parameters:
            column = vtk.vtkDoubleArray()
            column.SetName(parameter)
            numberColumns[parameter] = column
        for name in (FLAG_COLUMN, NOTES_COLUMN):
            textColumns[name] = vtk.vtkStringArray()
            textColumns[name].SetName(name)
        for key in keys:
            row = rows[key]
            textColumns[STRUCTURE_COLUMN].InsertNextValue(key[1])
            textColumns[TYPE_COLUMN].InsertNextValue(key[0])
            for parameter, column in numberColumns.items():
                value = row["values"].get(parameter)
                column.InsertNextValue(float("nan") if value is None else float(value))
            textColumns[FLAG_COLUMN].InsertNextValue(self.flagsOf(row["values"]))
            textColumns[NOTES_COLUMN].InsertNextValue("; ".join(row["notes"]))
        for column in [textColumns[STRUCTURE_COLUMN], textColumns[TYPE_COLUMN], *numberColumns.values(), textColumns[FLAG_COLUMN], textColumns[NOTES_COLUMN]]:
            table.AddColumn(column)
        for parameter in parameters:
            if parameter in units:
                tableNode.SetColumnUnitLabel(parameter, units[parameter])
            if hasattr(tableNode, "SetColumnTitle"):  # as SetUseColumnTitleAsColumnHeader
                tableNode.SetColumnTitle(parameter, parameter)
        tableNode.SetColumnDescription(FLAG_COLUMN, normal_range.RULE_TEXT + _("; and a Genant grade above 0"))
        table.Modified()
        tableNode.Modified()
        tableNode.EndModify(wasModified)

    @staticmethod
    def tableValue(tableNode, structureName: str, parameter: str):
        """The number in the row of ``structureName`` and the column ``parameter`` (None if absent or empty)."""
        table = tableNode.GetTable()
        names = table.GetColumnByName(STRUCTURE_COLUMN)
        column = table.GetColumnByName(parameter)
        if names is None or column is None:
            return None
        for row in range(table.GetNumberOfRows()):
            if names.GetValue(row) == structureName:
                value = column.GetValue(row)
                return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
        return None

    @staticmethod
    def structureNameOfRow(tableNode, row: int):
        names = tableNode.GetTable().GetColumnByName(STRUCTURE_COLUMN)
        if names is None or not 0 <= row < names.GetNumberOfValues():
            return None
        return names.GetValue(row)

    def exportMeasurements(self, tableNode, outputDirectory: str, volumeNode=None, overwrite: bool = False):
        """Write the table's measurements (as the table shows them) to ``<image>_measurements.csv`` and ``.json``
        in ``outputDirectory``, every row naming the image and the model; returns both paths.

        Raises ``FileExistsError`` (writing nothing) when the files exist and ``overwrite`` is False.
        """
        measurements = self.measurementsOfTable(tableNode)
        if not measurements:
            raise spineErrors.InputError(_("there are no measurements to export: measure first"))
        export = importlib.import_module("SpineAnalysisLib.measurements_export")
        image = volumeNode.GetName() if volumeNode is not None else tableNode.GetName()
        model = tableNode.GetAttribute(MODEL_ATTRIBUTE) or ""
        quality = json.loads(tableNode.GetAttribute(QUALITY_ATTRIBUTE) or "{}").get("status", "")
        return export.write_case_measurements(measurements, outputDirectory, image=image, model=model, quality=quality, overwrite=overwrite)

    @staticmethod
    def dicomIdentifiers(volumeNode) -> dict:
        """PatientID, StudyInstanceUID, SeriesInstanceUID and Modality of a volume loaded from DICOM ("" when unknown):
        from the attributes :meth:`loadInputs` sets, else from the subject hierarchy of Slicer's DICOM module."""
        result = {name: (volumeNode.GetAttribute(f"DICOM.{name}") or "") if volumeNode is not None else "" for name in DICOM_IDENTIFIER_TAGS}
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene) if volumeNode is not None else None
        if shNode is not None:
            series = shNode.GetItemByDataNode(volumeNode)
            study = shNode.GetItemParent(series) if series else 0
            patient = shNode.GetItemParent(study) if study else 0
            found = {
                "SeriesInstanceUID": shNode.GetItemUID(series, "DICOM") if series else "",
                "StudyInstanceUID": shNode.GetItemUID(study, "DICOM") if study else "",
                "PatientID": shNode.GetItemAttribute(patient, "DICOM.PatientID") if patient else "",
                "Modality": shNode.GetItemAttribute(series, "DICOM.Modality") if series else "",
            }
            result.update({key: value for key, value in found.items() if value and not result[key]})
        return result

    def exportStructuredMeasurements(self, tableNode, volumeNode, path: str, includePatientId: bool = True):
        """Write the table's measurements as one CSV row per value with the DICOM study/series identifiers
        (``SpineAnalysisLib.measurements_export``); returns the path."""
        measurements = self.measurementsOfTable(tableNode)
        if not measurements:
            raise spineErrors.InputError(_("there are no measurements to export: measure first"))
        export = importlib.import_module("SpineAnalysisLib.measurements_export")
        return export.write_structured_csv(measurements, path, identifiers=self.dicomIdentifiers(volumeNode), include_patient_id=includePatientId)

    def saveSegmentation(self, segmentationNode, path: str) -> str:
        """Write the segmentation (names, colours, terminology included) to a .seg.nrrd file."""
        path = os.fspath(path)
        if not path.lower().endswith(".seg.nrrd"):
            path += ".seg.nrrd"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        storageNode = segmentationNode.GetStorageNode()
        if storageNode is None:
            segmentationNode.AddDefaultStorageNode()
            storageNode = segmentationNode.GetStorageNode()
        storageNode.SetFileName(path)
        if not storageNode.WriteData(segmentationNode):
            raise spineErrors.SpineAnalysisError(f"{path}: the segmentation could not be written")
        return path

    def show3D(self, segmentationNode) -> None:
        """Show the segments as surfaces in the 3D views."""
        segmentationNode.CreateClosedSurfaceRepresentation()
        displayNode = segmentationNode.GetDisplayNode()
        if displayNode is not None:
            displayNode.SetVisibility3D(True)

    # -- recomputation after edits ------------------------------------------------------------------
    def observeSegmentation(self, segmentationNode, volumeNode, tableNode=None, sex=None, age=None) -> None:
        """Watch a segmentation: a segment whose voxels change marks its structure for re-measuring.

        ``SegmentModified`` and ``RepresentationModified`` also fire for changes that leave the voxels alone
        (colour, tags, a 3D surface being made), so an event only makes a segment a *candidate*; its voxels
        are compared with a fingerprint taken at the last measurement when the changes are collected
        (:attr:`pendingLabels`, :meth:`recomputeDirty`). Renamed, added or removed segments change the rows:
        everything is measured again. The widget debounces with a timer started from
        ``pendingChangedCallback``; scripts and tests call :meth:`recomputeDirty` themselves.
        """
        state = self._observed
        if state is not None and state["segmentationNodeID"] == segmentationNode.GetID():
            state.update(volumeNodeID=volumeNode.GetID(), tableNodeID=tableNode.GetID() if tableNode else None, sex=sex, age=age)
            return
        self.stopObserving()
        segmentation = segmentationNode.GetSegmentation()
        state = {
            "segmentationNodeID": segmentationNode.GetID(),
            "volumeNodeID": volumeNode.GetID(),
            "tableNodeID": tableNode.GetID() if tableNode else None,
            "sex": sex,
            "age": age,
            "segmentation": segmentation,
            "names": {},
            "fingerprints": {},
            "candidates": set(),  # segment IDs with an event since the last look at their voxels
            "pending": set(),  # labels whose voxels changed
            "full": False,
            "observers": [],
        }
        self._observed = state
        self._snapshot(segmentationNode)

        @vtk.calldata_type(vtk.VTK_STRING)
        def onModified(caller, event, segmentId=None):
            if segmentId:
                self._onSegmentModified(segmentId)

        @vtk.calldata_type(vtk.VTK_STRING)
        def onAddedOrRemoved(caller, event, segmentId=None):
            self._onSegmentsChanged()

        state["callbacks"] = (onModified, onAddedOrRemoved)  # keep the wrappers alive
        for event, callback in (
            (slicer.vtkSegmentation.SegmentModified, onModified),
            (slicer.vtkSegmentation.RepresentationModified, onModified),
            (slicer.vtkSegmentation.SegmentAdded, onAddedOrRemoved),
            (slicer.vtkSegmentation.SegmentRemoved, onAddedOrRemoved),
        ):
            state["observers"].append(segmentation.AddObserver(event, callback))

    def stopObserving(self) -> None:
        state = self._observed
        self._observed = None
        if state is not None:
            for tag in state["observers"]:
                state["segmentation"].RemoveObserver(tag)

    @staticmethod
    def segmentFingerprint(segmentationNode, segmentId):
        """A digest of a segment's voxels (binary labelmap source representation); None if it has none."""
        import hashlib

        segmentation = segmentationNode.GetSegmentation()
        segment = segmentation.GetSegment(segmentId)
        sourceName = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
        if segment is None or segmentation.GetSourceRepresentationName() != sourceName:
            return None
        image = segment.GetRepresentation(sourceName)
        if image is None or image.GetPointData().GetScalars() is None:
            return ("empty",)
        array = slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentationNode, segmentId)  # shared layer, no copy
        voxels = np.flatnonzero(array == segment.GetLabelValue())
        digest = hashlib.blake2b(voxels.astype(np.int64, copy=False).tobytes(), digest_size=16).hexdigest()
        return (tuple(image.GetExtent()), voxels.size, digest)

    def _snapshot(self, segmentationNode) -> None:
        """Remember names and voxel fingerprints of all segments (after a full measurement)."""
        state = self._observed
        segmentation = segmentationNode.GetSegmentation()
        ids = self.segmentIds(segmentationNode)
        state["names"] = {sid: segmentation.GetSegment(sid).GetName() for sid in ids}
        state["fingerprints"] = {sid: self.segmentFingerprint(segmentationNode, sid) for sid in ids}
        state["candidates"] = set()

    def _collectChanges(self) -> None:
        """Turn candidate segments into pending labels when their voxels really changed."""
        state = self._observed
        if state is None or not state["candidates"]:
            return
        segmentationNode = slicer.mrmlScene.GetNodeByID(state["segmentationNodeID"])
        segmentation = state["segmentation"]
        toCheck = list(state["candidates"])
        checked = set()
        while toCheck:
            segmentId = toCheck.pop()
            segment = segmentation.GetSegment(segmentId)
            if segment is None or segmentId in checked:
                continue
            checked.add(segmentId)
            fingerprint = self.segmentFingerprint(segmentationNode, segmentId) if segmentationNode else None
            if fingerprint is None or fingerprint != state["fingerprints"].get(segmentId):
                state["fingerprints"][segmentId] = fingerprint
                label = self.labelOfSegment(segment)
                if label is not None:
                    state["pending"].add(label)
                # painting one segment can overwrite its neighbours in the same shared labelmap layer
                layer = segmentation.GetLayerIndex(segmentId)
                toCheck += [sid for sid in state["fingerprints"] if sid not in checked and segmentation.GetLayerIndex(sid) == layer]
        state["candidates"] = set()

    @property
    def pendingLabels(self) -> set:
        """Labels whose voxels changed and that wait to be measured again (empty when nothing is observed)."""
        self._collectChanges()
        return set(self._observed["pending"]) if self._observed else set()

    @property
    def fullRecomputePending(self) -> bool:
        """True after segments were added, removed or renamed: the next recomputation measures everything."""
        return bool(self._observed and self._observed["full"])

    def _notifyPending(self) -> None:
        if self.pendingChangedCallback is not None:
            self.pendingChangedCallback()

    def _onSegmentModified(self, segmentId) -> None:
        state = self._observed
        if state is None or self._suppressEvents:
            return
        segment = state["segmentation"].GetSegment(segmentId)
        if segment is None:
            return
        name = segment.GetName()
        if state["names"].get(segmentId) != name:  # renamed by the user: rows change, measure everything
            state["names"][segmentId] = name
            state["full"] = True
            self.applySchemeToSegment(segment)  # colour and terminology follow the new name
        else:
            state["candidates"].add(segmentId)
        self._notifyPending()

    def _onSegmentsChanged(self) -> None:
        state = self._observed
        if state is None or self._suppressEvents:
            return
        segmentation = state["segmentation"]
        state["names"] = {segmentation.GetNthSegmentID(i): segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
        state["full"] = True
        self._notifyPending()

    def _markAllDirty(self, segmentationNode) -> None:
        state = self._observed
        if state is not None and state["segmentationNodeID"] == segmentationNode.GetID():
            segmentation = segmentationNode.GetSegmentation()
            state["names"] = {sid: segmentation.GetSegment(sid).GetName() for sid in self.segmentIds(segmentationNode)}
            state["full"] = True
            self._notifyPending()

    @staticmethod
    def labelsToRemeasure(changed) -> set | None:
        """Structures to measure again after ``changed`` labels were edited; None: measure everything.

        A disc's parameters depend on the disc and its two vertebrae, so an edited disc is measured alone.
        An edited vertebra changes its own rows, both discs next to it (heights, DHI, angles), its
        neighbours' slip and the whole-spine angles, which are only computed in a full measurement.
        """
        changed = set(changed)
        if any(not scheme.is_disc(label) for label in changed):
            return None
        return changed

    def recomputeDirty(self):
        """Measure again what changed since the last call; returns the updated table node (None if nothing to do)."""
        state = self._observed
        self._collectChanges()
        if state is None or not (state["pending"] or state["full"]):
            return None
        scene = slicer.mrmlScene
        segmentationNode = scene.GetNodeByID(state["segmentationNodeID"])
        volumeNode = scene.GetNodeByID(state["volumeNodeID"])
        tableNode = scene.GetNodeByID(state["tableNodeID"]) if state["tableNodeID"] else None
        if segmentationNode is None or volumeNode is None:
            self.stopObserving()
            return None
        full = state["full"] or tableNode is None or not self._measurements.get(self._tableKey(tableNode))
        pending = set(state["pending"])
        labels = None if full else self.labelsToRemeasure(pending)
        # a failure (e.g. an emptied segmentation) keeps the changes pending for the next attempt
        tableNode = self.updateTable(segmentationNode, volumeNode, tableNode, labels=labels, sex=state["sex"], age=state["age"])
        state["pending"] -= pending
        if labels is None:
            state["full"] = False
        state["tableNodeID"] = tableNode.GetID()
        return tableNode

    # -- navigation ---------------------------------------------------------------------------------
    def levelCentroidRAS(self, segmentationNode, segmentName: str):
        """Centre (RAS, mm) of the named segment."""
        segmentId = self.segmentIdByName(segmentationNode, segmentName)
        if segmentId is None:
            raise spineErrors.InputError(_("there is no segment called {name}").format(name=segmentName))
        center = segmentationNode.GetSegmentCenterRAS(segmentId)
        if center is None:
            raise spineErrors.InputError(_("{name} is empty").format(name=segmentName))
        return tuple(float(c) for c in center)

    def jumpToLevel(self, segmentationNode, segmentName: str, centered: bool = True):
        """Move every slice view to the centre of the named segment; returns that point (RAS)."""
        r, a, s = self.levelCentroidRAS(segmentationNode, segmentName)
        mode = slicer.vtkMRMLSliceNode.CenteredJumpSlice if centered else slicer.vtkMRMLSliceNode.OffsetJumpSlice
        slicer.vtkMRMLSliceNode.JumpAllSlices(slicer.mrmlScene, r, a, s, mode)
        return (r, a, s)

    # -- relabelling --------------------------------------------------------------------------------
    def relabel(self, segmentationNode, mapping: dict) -> dict:
        """Rename vertebrae (``{"L3": "L4", ...}``); discs next to a renamed vertebra follow.

        Colours and terminology follow the names. Raises ValueError (and changes nothing) when anatomy forbids
        the result (``SpineAnalysisLib.relabel.plan_relabel``). The names before are kept on the node for
        :meth:`undoRelabel`. Returns ``{old name: new name}`` of every renamed segment.
        """
        segmentation = segmentationNode.GetSegmentation()
        before = {sid: segmentation.GetSegment(sid).GetName() for sid in self.segmentIds(segmentationNode)}
        renames = relabelling.plan_relabel(before, mapping)
        if renames:
            self._pushRenameHistory(segmentationNode, {sid: old for sid, (old, _new) in renames.items()})
        self._renameSegments(segmentationNode, {sid: new for sid, (_old, new) in renames.items()})
        return {old: new for old, new in renames.values()}

    def _renameSegments(self, segmentationNode, names: dict) -> None:
        segmentation = segmentationNode.GetSegmentation()
        self._suppressEvents += 1
        try:
            for segmentId, name in names.items():
                segment = segmentation.GetSegment(segmentId)
                if segment is not None:
                    segment.SetName(name)
                    self.applySchemeToSegment(segment)
        finally:
            self._suppressEvents -= 1
        self.applyScheme(segmentationNode)
        self._markAllDirty(segmentationNode)

    @staticmethod
    def _renameHistory(segmentationNode) -> list:
        try:
            return json.loads(segmentationNode.GetAttribute(RENAME_HISTORY_ATTRIBUTE) or "[]")
        except ValueError:
            return []

    def _pushRenameHistory(self, segmentationNode, names: dict) -> None:
        history = self._renameHistory(segmentationNode)[-19:] + [names]  # the last 20 renames
        segmentationNode.SetAttribute(RENAME_HISTORY_ATTRIBUTE, json.dumps(history))

    def canUndoRelabel(self, segmentationNode) -> bool:
        return segmentationNode is not None and bool(self._renameHistory(segmentationNode))

    def undoRelabel(self, segmentationNode) -> dict:
        """Give back the names before the last Shift/Rename (saved with the scene); returns ``{old: new}``."""
        history = self._renameHistory(segmentationNode)
        if not history:
            raise ValueError("there is no rename to undo")
        names = history.pop()
        segmentationNode.SetAttribute(RENAME_HISTORY_ATTRIBUTE, json.dumps(history))
        segmentation = segmentationNode.GetSegmentation()
        present = {sid: name for sid, name in names.items() if segmentation.GetSegment(sid) is not None}
        renamed = {segmentation.GetSegment(sid).GetName(): name for sid, name in present.items()}
        self._renameSegments(segmentationNode, present)
        return renamed

    def shiftLevels(self, segmentationNode, delta: int, segmentNames=None) -> dict:
        """Move every vertebra name ``delta`` levels caudally (+1: L3 -> L4) or cranially (-1); discs follow.

        ``segmentNames`` limits the shift to those vertebrae. Returns ``{old name: new name}``.
        """
        names = list(segmentNames) if segmentNames is not None else self.vertebraNames(segmentationNode)
        return self.relabel(segmentationNode, relabelling.shift_mapping(names, delta))

    def renameVertebra(self, segmentationNode, oldName: str, newName: str) -> dict:
        """Rename one vertebra (e.g. "S1" -> "L6" for a transitional vertebra); its discs follow."""
        if not newName or not newName.strip():
            raise ValueError("enter the new name of the vertebra")
        return self.relabel(segmentationNode, {oldName: newName.strip()})

    # -- running the model --------------------------------------------------------------------------
    @staticmethod
    def missingDependencies(requirements=MODEL_REQUIREMENTS) -> list:
        """Requirements (default: the model's) that are not importable."""
        return dependencies.missing(requirements)

    def ensureDependencies(self, askConfirmation: bool = True, requirements=MODEL_REQUIREMENTS) -> bool:
        """Make ``requirements`` (default: torch and MONAI; ``DICOM_SEG_REQUIREMENTS`` for DICOM SEG) importable,
        installing them into Slicer's Python after asking once (``SpineAnalysisSlicer.dependencies``).

        Never installs while Slicer runs its tests or outside the application (returns False there when they
        are missing); False also when the user declines.
        """
        installTorch = None
        try:
            import PyTorchUtils  # the PyTorch extension picks a build that matches the GPU driver

            def installTorch():
                return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=">=2.2")
        except ImportError:
            pass
        confirm = slicer.util.confirmOkCancelDisplay if askConfirmation and _inApplication() else None
        return dependencies.ensure(
            requirements, confirm=confirm, inApplication=_inApplication(), testing=_isTesting(), installTorch=installTorch,
            pipEnsure=dependencies.findPipEnsure(), pipInstall=getattr(slicer.util, "pip_install", None),
        )  # fmt: skip

    def runSegmentation(self, volumeNode, model=None, device="auto", synchronous=True, progressCallback=None):
        """Segment ``volumeNode`` with the model into a *new* segmentation node: an earlier segmentation (and
        every correction in it) is never overwritten.

        ``synchronous=True`` runs ``SpineAnalysisLib.inference.segment_image`` here and returns the
        segmentation node (blocks the GUI: for scripts and tests). ``synchronous=False`` starts a background
        process and returns a :class:`SegmentationJob`; poll it, then call :meth:`finishSegmentation`.
        """
        if volumeNode is None:
            raise spineErrors.InputError(_("select an input volume"))
        modelName = None if not model or model == "default" else model
        if not synchronous:
            return self.startSegmentation(volumeNode, modelName, device)
        inference = importlib.import_module("SpineAnalysisLib.inference")

        def report(fraction, message=""):
            if progressCallback is not None:
                progressCallback(fraction, message)

        result = inference.segment_image(self.volumeNodeToSitk(volumeNode), model_name=modelName, device=device or "auto", progress=report)
        labelImage = getattr(result, "label_map", result)
        segmentationNode = self.importLabelMap(labelImage, volumeNode, name=self._newSegmentationName(volumeNode))
        self.rememberModelOutput(segmentationNode, labelImage, getattr(result, "model", None) or modelName or DEFAULT_MODEL_CHOICE)
        return segmentationNode

    @staticmethod
    def _newSegmentationName(volumeNode) -> str:
        return slicer.mrmlScene.GenerateUniqueName(f"{volumeNode.GetName()} segmentation")

    def segmentationForVolume(self, volumeNode, current=None):
        """The segmentation to show with ``volumeNode``: ``current`` when it belongs to that volume (or to none),
        else the volume's newest segmentation, else None (never another volume's, which a run would overwrite)."""
        if volumeNode is None or current is None:
            return current
        reference = current.GetNodeReferenceID(vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
        if not reference or reference == volumeNode.GetID():
            return current
        own = self.segmentationsOfVolume(volumeNode)
        return own[-1] if own else None

    @staticmethod
    def segmentationsOfVolume(volumeNode) -> list:
        """Segmentation nodes whose reference geometry is ``volumeNode``, oldest first (what a new run would
        sit beside: the widget asks before adding another, and selects the newest after a volume change)."""
        if volumeNode is None:
            return []
        scene = slicer.mrmlScene
        role = vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
        nodes = [scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode") for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]
        return [node for node in nodes if node.GetNodeReferenceID(role) == volumeNode.GetID()]

    def segmentationCommand(self, inputPath: str, outputPath: str, model=None, device="auto") -> list:
        """The command line of a background segmentation (``python -m SpineAnalysisLib segment ...``)."""
        python = shutil.which("PythonSlicer") if _inApplication() else None
        command = [python or sys.executable, "-m", "SpineAnalysisLib", "segment", inputPath, "-o", outputPath, "--device", device or "auto", "--progress"]
        if model:
            command += ["--model", model]
        return command

    def startSegmentation(self, volumeNode, model=None, device="auto", command=None) -> SegmentationJob:
        """Write the volume to a temporary NIfTI file and start the segmentation in a background process.

        ``command`` replaces the default command line (tests); ``{input}`` and ``{output}`` in it are
        replaced by the file paths.
        """
        workDir = tempfile.mkdtemp(prefix="SpineAnalysis-")
        inputPath = os.path.join(workDir, "input.nii.gz")
        outputPath = os.path.join(workDir, "labels.nii.gz")
        try:
            spineIO.write_image(self.volumeNodeToSitk(volumeNode), inputPath)
            if command is None:
                args = self.segmentationCommand(inputPath, outputPath, model, device)
            else:
                args = [str(a).replace("{input}", inputPath).replace("{output}", outputPath) for a in command]
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_LIBRARY_PARENT, env.get("PYTHONPATH", "")) if p)
            if device == "cpu":
                env["CUDA_VISIBLE_DEVICES"] = "-1"
            process = BackgroundProcess(args, env=env, cwd=_LIBRARY_PARENT).start()
        except BaseException:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        job = SegmentationJob(process, workDir, volumeNode.GetID(), outputPath)
        job.model = model or DEFAULT_MODEL_CHOICE
        return job

    def finishSegmentation(self, job: SegmentationJob):
        """Load the label map of a finished job into a new segmentation node; raises ``SpineAnalysisError`` with
        the reason when the job failed or was cancelled (one error, shown once by the widget)."""
        job.poll()
        if job.is_running:
            raise spineErrors.SpineAnalysisError(_("the segmentation is still running"))
        try:
            if not job.succeeded:
                raise spineErrors.SpineAnalysisError(job.failureMessage())
            volumeNode = slicer.mrmlScene.GetNodeByID(job.volumeNodeID)
            if volumeNode is None:
                raise spineErrors.SpineAnalysisError(_("the input volume was removed while it was being segmented"))
            labelImage = spineIO.read_label_map(job.outputPath)
            segmentationNode = self.importLabelMap(labelImage, volumeNode, name=self._newSegmentationName(volumeNode))
            self.rememberModelOutput(segmentationNode, labelImage, self._modelOfJob(job))
            return segmentationNode
        finally:
            job.cleanup()

    def completeSegmentation(self, job: SegmentationJob, tableNode=None, sex=None, age=None):
        """The end of a background run in one call: load the result into a new segmentation and measure it.

        Returns ``(segmentationNode, tableNode)``. Any failure (the job's own, loading, measuring) raises one
        ``SpineAnalysisError``/``InputError`` whose message says what went wrong; the widget shows it once.
        A table of another segmentation is not reused: the new one gets its own.
        """
        segmentationNode = self.finishSegmentation(job)
        volumeNode = slicer.mrmlScene.GetNodeByID(job.volumeNodeID)
        return segmentationNode, self.updateTable(segmentationNode, volumeNode, None, sex=sex, age=age)

    @staticmethod
    def _modelOfJob(job) -> str:
        """The model a finished job used: the CLI's last line says "... s on cpu with NAME VERSION"."""
        try:
            tail = job.process.output_tail(20)
        except Exception:  # noqa: BLE001 - a stand-in process in tests
            tail = ""
        for line in reversed(tail.splitlines()):
            if " with " in line and " s on " in line:
                return line.rsplit(" with ", 1)[1].strip()
        return getattr(job, "model", None) or DEFAULT_MODEL_CHOICE

    # -- annotators' loop: model output, training export, model choice --------------------------------
    def rememberModelOutput(self, segmentationNode, labelImage, model: str):
        """Keep the model's label map beside the segmentation it created (a hidden label map node referenced by
        the segmentation and saved with the scene), so that the corrected segmentation can be exported with the
        original. Returns the label map node."""
        outputNode = segmentationNode.GetNodeReference(MODEL_OUTPUT_REFERENCE)
        outputNode = self.sitkToVolumeNode(labelImage, outputNode, name=f"{segmentationNode.GetName()} model output", labelmap=True)
        outputNode.SetHideFromEditors(True)
        outputNode.SetAttribute(MODEL_ATTRIBUTE, str(model))
        segmentationNode.SetAttribute(MODEL_ATTRIBUTE, str(model))
        segmentationNode.SetNodeReferenceID(MODEL_OUTPUT_REFERENCE, outputNode.GetID())
        return outputNode

    def modelOutput(self, segmentationNode):
        """``(label map, model name)`` of the model run that created ``segmentationNode``; ``(None, None)`` for a
        segmentation that was loaded or drawn."""
        if segmentationNode is None:
            return None, None
        outputNode = segmentationNode.GetNodeReference(MODEL_OUTPUT_REFERENCE)
        if outputNode is None or outputNode.GetImageData() is None:
            return None, None
        image = self.volumeNodeToSitk(outputNode)
        image = sitk.Cast(image, sitk.sitkUInt16) if image.GetPixelID() != sitk.sitkUInt16 else image
        return image, outputNode.GetAttribute(MODEL_ATTRIBUTE) or segmentationNode.GetAttribute(MODEL_ATTRIBUTE)

    def exportTrainingCase(self, segmentationNode, volumeNode, datasetDirectory: str, caseId: str | None = None, annotator: str | None = None):
        """Write the corrected segmentation, the volume and the model's original output into a training dataset
        folder (``SpineAnalysisLib.annotation.export_training_case``); returns its ``ExportResult``."""
        if segmentationNode is None or not self.segmentLabels(segmentationNode):
            raise spineErrors.InputError(_("there is no segmentation to export: segment or load one first"))
        if volumeNode is None:
            raise spineErrors.InputError(_("select the input volume"))
        if not datasetDirectory:
            raise spineErrors.InputError(_("choose a dataset folder"))
        annotation = importlib.import_module("SpineAnalysisLib.annotation")
        image = self.volumeNodeToSitk(volumeNode)
        corrected = self.segmentationToLabelMap(segmentationNode, volumeNode)
        original, model = self.modelOutput(segmentationNode)
        if original is not None and not spineIO.same_grid(original, image):
            original = None  # the volume was moved or resampled after segmentation: the voxels no longer correspond
        segmentation = segmentationNode.GetSegmentation()
        names = {label: segmentation.GetSegment(segmentId).GetName() for segmentId, label in self.segmentLabels(segmentationNode).items()}
        caseId = caseId or annotation.case_id_from_path(volumeNode.GetName() or "case")
        return annotation.export_training_case(
            image, corrected, datasetDirectory, caseId, original_label_map=original, model=model, annotator=annotator, names=names
        )

    @staticmethod
    def hasDicomSource(volumeNode) -> bool:
        """True when a DICOM SEG can reference the volume's series (loaded by the module or the DICOM browser)."""
        return dicomsource.hasDicomSource(volumeNode)

    def exportDicomSeg(self, segmentationNode, volumeNode, path: str, sourceFolder: str | None = None, dicomDatabase=None) -> str:
        """Write the segmentation as a DICOM SEG referencing the series the volume was loaded from
        (``SpineAnalysisLib.dicomseg.write_dicom_seg``): segment names and SNOMED codes of the scheme, the
        model as algorithm, and the structures edited since the model run marked SEMIAUTOMATIC.

        The series is the folder given, the one "Load DICOM folder..." recorded, or, for a volume from Slicer's
        DICOM browser, its instances found in ``dicomDatabase`` (default: ``slicer.dicomDatabase``).
        """
        if segmentationNode is None or not self.segmentLabels(segmentationNode):
            raise spineErrors.InputError(_("there is no segmentation to export"))
        database = dicomDatabase if dicomDatabase is not None else getattr(slicer, "dicomDatabase", None)
        with dicomsource.SeriesFolder(volumeNode, database) as recorded:
            sourceFolder = sourceFolder or recorded
            if not sourceFolder:
                raise spineErrors.InputError(_("a DICOM SEG needs the source series: load the volume from DICOM (DICOM browser or 'Load DICOM folder...')"))
            dicomseg = importlib.import_module("SpineAnalysisLib.dicomseg")
            annotation = importlib.import_module("SpineAnalysisLib.annotation")
            labelMap = self.segmentationToLabelMap(segmentationNode, volumeNode)
            segmentation = segmentationNode.GetSegmentation()
            names = {label: segmentation.GetSegment(segmentId).GetName() for segmentId, label in self.segmentLabels(segmentationNode).items()}
            original, model = self.modelOutput(segmentationNode)
            if original is not None and not spineIO.same_grid(original, labelMap):
                original = None
            edited = annotation.edited_structures(
                sitk.GetArrayFromImage(labelMap), sitk.GetArrayFromImage(original) if original is not None else None, names
            )
            return str(dicomseg.write_dicom_seg(labelMap, sourceFolder, path, names=names, model=model, edited=edited))

    @staticmethod
    def availableModels() -> list:
        """``(text, model)`` pairs for the model selector: the default model first, then every model on the
        search path (``SpineAnalysisLib.model.catalog``, which needs no torch)."""
        models = [(_("default (shipped model)"), DEFAULT_MODEL_CHOICE)]
        catalog = importlib.import_module("SpineAnalysisLib.model.catalog")
        for info in catalog.list_models():
            models.append((info.label, f"{info.name}@{info.version}"))
        return models


#
# SpineAnalysisTest
#


class SpineAnalysisTest(ScriptedLoadableModuleTest):
    """Self-test: a synthetic lumbar phantom loaded, corrected, re-measured and relabelled."""

    #: Phantom geometry in millimetres: three vertebral bodies and two discs, stacked along S-I.
    VERTEBRA_HEIGHT = 25.0
    DISC_HEIGHT = 10.0
    SPACING = (0.5, 0.8, 3.0)  # (superior-inferior, anterior-posterior, left-right), like a sagittal MRI

    def setUp(self):
        slicer.mrmlScene.Clear(0)
        self.tempDir = tempfile.mkdtemp(prefix="SpineAnalysisTest-")

    def tearDown(self):
        shutil.rmtree(self.tempDir, ignore_errors=True)

    def runTest(self):
        """Run each test; a test that cannot run here (e.g. torch not installed yet, the normal first state)
        is reported as skipped, not as a failure (Slicer's runTest reports any exception as "Test failed")."""
        for test in (self.test_workflow, self.test_sample):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as reason:
                self.delayDisplay(f"{test.__name__} skipped: {reason}")
                self.skipped = getattr(self, "skipped", []) + [(test.__name__, str(reason))]
            finally:
                self.tearDown()

    # -- phantom ------------------------------------------------------------------------------------
    @classmethod
    def makePhantom(cls, folder):
        """Write ``image.nii.gz`` and ``labels.nii.gz``: L3, L4, L5 and the L3-L4, L4-L5 discs as boxes.

        The grid is sagittal like the training data (i: inferior, j: posterior, k: right) and anisotropic.
        Returns the paths and a dict ``name -> (superior mm, inferior mm)`` of the S coordinate of each box.
        """
        si, ap, lr = cls.SPACING
        margin = 15.0
        stack = [("L3", cls.VERTEBRA_HEIGHT), ("L3-L4", cls.DISC_HEIGHT), ("L4", cls.VERTEBRA_HEIGHT),
                 ("L4-L5", cls.DISC_HEIGHT), ("L5", cls.VERTEBRA_HEIGHT)]  # fmt: skip
        total = sum(h for _n, h in stack) + 2 * margin
        size = (int(round(total / si)), int(round(80.0 / ap)), int(round(60.0 / lr)))  # (i, j, k)
        labels = np.zeros(size[::-1], dtype=np.uint16)  # numpy order (k, j, i)
        image = np.full(size[::-1], 40.0, dtype=np.float32)
        jSlice = slice(int(round(20.0 / ap)), int(round(55.0 / ap)))  # 35 mm deep
        kSlice = slice(int(round(10.0 / lr)), int(round(50.0 / lr)))  # 40 mm wide
        extents = {}
        top = margin
        for name, height in stack:
            i0, i1 = int(round(top / si)), int(round((top + height) / si))
            labels[kSlice, jSlice, i0:i1] = scheme.label_from_name(name)
            image[kSlice, jSlice, i0:i1] = 600.0 if "-" in name else 300.0
            extents[name] = (i0, i1)
            top += height
        rng = np.random.default_rng(7)
        image += rng.normal(0.0, 5.0, image.shape).astype(np.float32)
        direction = (0.0, 0.0, -1.0, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0)  # i -> inferior, j -> posterior, k -> right (LPS)
        origin = (30.0, -40.0, 60.0)
        paths = []
        for array, fileName in ((image, "image.nii.gz"), (labels, "labels.nii.gz")):
            itkImage = sitk.GetImageFromArray(array)
            itkImage.SetSpacing((si, ap, lr))
            itkImage.SetDirection(direction)
            itkImage.SetOrigin(origin)
            path = os.path.join(folder, fileName)
            sitk.WriteImage(itkImage, path, True)
            paths.append(path)
        # S coordinate (LPS z = RAS S) of voxel index i is origin_z - i * si
        bounds = {name: (origin[2] - (i0 - 0.5) * si, origin[2] - (i1 - 0.5) * si) for name, (i0, i1) in extents.items()}
        return paths[0], paths[1], bounds

    @staticmethod
    def superiorAxis(volumeNode):
        """(numpy axis, +1/-1): the array axis most aligned with RAS superior and whether it increases upward."""
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        sComponents = [matrix.GetElement(2, column) for column in range(3)]  # S change per i, j, k step
        ijkAxis = int(np.argmax(np.abs(sComponents)))
        return 2 - ijkAxis, (1 if sComponents[ijkAxis] > 0 else -1)

    # -- the test -----------------------------------------------------------------------------------
    def test_workflow(self):
        self.delayDisplay("Loading a synthetic lumbar phantom")
        logic = SpineAnalysisLogic()
        imagePath, labelPath, bounds = self.makePhantom(self.tempDir)
        volumeNode, segmentationNode = logic.loadInputs(imagePath, labelPath)
        self.assertIsNotNone(volumeNode)
        names = {segmentationNode.GetSegmentation().GetNthSegment(i).GetName() for i in range(segmentationNode.GetSegmentation().GetNumberOfSegments())}
        self.assertEqual(names, {"L3", "L4", "L5", "L3-L4", "L4-L5"})
        l4 = segmentationNode.GetSegmentation().GetSegment(logic.segmentIdByName(segmentationNode, "L4"))
        self.assertIn("^11994002^", compat.segmentTerminology(l4))

        self.delayDisplay("Measuring")
        try:
            logic._measurementsModule()
        except ImportError as error:
            raise unittest.SkipTest(f"SpineAnalysisLib.measurements is not available: {error}") from None
        tableNode = logic.updateTable(segmentationNode, volumeNode)
        before = logic.tableValue(tableNode, "L4-L5", "height_mean_mm")
        self.assertIsNotNone(before, "no height_mean_mm for L4-L5")
        self.assertAlmostEqual(before, self.DISC_HEIGHT, delta=1.0)

        self.delayDisplay("Correcting the L4-L5 disc: its top 2 mm are erased")
        logic.observeSegmentation(segmentationNode, volumeNode, tableNode)
        discId = logic.segmentIdByName(segmentationNode, "L4-L5")
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, discId, volumeNode)
        axis, upward = self.superiorAxis(volumeNode)
        spacingAlongAxis = volumeNode.GetSpacing()[2 - axis]
        erase = int(round(2.0 / spacingAlongAxis))
        occupied = np.nonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis)))[0]
        topSlices = occupied[-erase:] if upward > 0 else occupied[:erase]
        index = [slice(None)] * 3
        index[axis] = topSlices
        mask[tuple(index)] = 0
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentationNode, discId, volumeNode)
        self.assertIn(scheme.label_from_name("L4-L5"), logic.pendingLabels)
        logic.recomputeDirty()
        after = logic.tableValue(tableNode, "L4-L5", "height_mean_mm")
        self.assertAlmostEqual(before - after, erase * spacingAlongAxis, delta=spacingAlongAxis)
        self.assertEqual(logic.pendingLabels, set())

        self.delayDisplay("Shifting the levels down by one")
        renamed = logic.shiftLevels(segmentationNode, +1)
        self.assertEqual(renamed, {"L3": "L4", "L4": "L5", "L5": "S1", "L3-L4": "L4-L5", "L4-L5": "L5-S1"})
        self.assertEqual(logic.vertebraNames(segmentationNode), ["L4", "L5", "S1"])
        s1 = segmentationNode.GetSegmentation().GetSegment(logic.segmentIdByName(segmentationNode, "S1"))
        self.assertIn("^65985001^", compat.segmentTerminology(s1))
        logic.recomputeDirty()
        self.assertIsNotNone(logic.tableValue(tableNode, "L5-S1", "height_mean_mm"))
        self.assertIsNone(logic.tableValue(tableNode, "L3-L4", "height_mean_mm"))
        logic.stopObserving()
        self.delayDisplay("Test passed")

    SAMPLE_IMAGE = "MyoSegmenTUM_VB3_02_image.nii.gz"
    SAMPLE_LABELS = "MyoSegmenTUM_VB3_02_labels.nii.gz"

    def test_sample(self):
        """The bundled MRI sample: segmented synchronously by the shipped model, measured, navigated,
        and compared with its expert L1-L5 vertebral bodies."""
        folder = os.path.join(_LIBRARY_PARENT, "Resources", "Samples")
        imagePath, labelPath = os.path.join(folder, self.SAMPLE_IMAGE), os.path.join(folder, self.SAMPLE_LABELS)
        if not (os.path.isfile(imagePath) and os.path.isfile(labelPath)):
            self.delayDisplay("No bundled sample: skipped")
            return
        self.delayDisplay("Loading the bundled sample")
        logic = SpineAnalysisLogic()
        volumeNode, expertNode = logic.loadInputs(imagePath, labelPath)
        names = ["L1", "L2", "L3", "L4", "L5"]
        self.assertEqual(logic.vertebraNames(expertNode), names)
        try:
            importlib.import_module("SpineAnalysisLib.inference")
        except ImportError as error:  # torch/MONAI not installed in this Slicer yet
            raise unittest.SkipTest(f"model dependencies missing: {error}") from None

        self.delayDisplay("Segmenting synchronously with the shipped model (CPU)")
        segmentationNode = logic.runSegmentation(volumeNode, None, "cpu", synchronous=True)
        found = logic.vertebraNames(segmentationNode)
        for name in names:
            self.assertIn(name, found, f"the model did not find {name} (found {found})")
        discs = [label for label in logic.segmentLabels(segmentationNode).values() if scheme.is_disc(label)]
        self.assertGreaterEqual(len(discs), 3, f"too few discs: {discs}")
        expert = logic.segmentationToLabelArray(expertNode, volumeNode)
        predicted = logic.segmentationToLabelArray(segmentationNode, volumeNode)
        for name in names:
            label = scheme.label_from_name(name)
            a, b = expert == label, predicted == label
            dice = 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())
            self.assertGreater(dice, 0.7, f"{name}: Dice {dice:.2f} against the expert outline")

        tableNode = logic.updateTable(segmentationNode, volumeNode)
        for name in names:
            height = logic.tableValue(tableNode, name, "height_middle_mm")
            self.assertIsNotNone(height, f"no height for {name}")
            self.assertTrue(15.0 < height < 40.0, f"{name}: implausible vertebral height {height} mm")
        superior = [logic.levelCentroidRAS(segmentationNode, name)[2] for name in names]
        self.assertEqual(superior, sorted(superior, reverse=True), "levels are not ordered cranial to caudal")
        self.assertEqual(logic.jumpToLevel(segmentationNode, "L3"), logic.levelCentroidRAS(segmentationNode, "L3"))
        self.delayDisplay("Sample test passed")
