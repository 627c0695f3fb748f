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

import importlib
import logging
import os
import shutil
import sys
import tempfile
import unittest
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
from SpineAnalysisLib import relabel as relabelling  # noqa: E402
from SpineAnalysisLib.measure_segmentation import measure_segmentation  # noqa: E402  (measure_case, CT-aware)
from SpineAnalysisLib import results_table  # noqa: E402
from SpineAnalysisLib.cli.options import DEVICES  # noqa: E402  (the one list of devices, shared with the CLI)
from SpineAnalysisSlicer import (  # noqa: E402
    banner,
    compat,
    dependencies,
    dicomsource,
    earlier,
    exports,
    feedback,
    inputs,
    job,
    labelmaps,
    landmarks,
    modeloutput,
    otherschemes,
    review,
    segments,
    table,
    terminology,
    volumes,
    watcher,
)

# Names kept for scripts and tests that used them from this module.
TERMINOLOGY_CONTEXT = terminology.CONTEXT_NAME
CATEGORY_CODE = terminology.CATEGORY
COLOR_TABLE_NAME = labelmaps.COLOR_TABLE_NAME
COLOR_TABLE_ATTRIBUTE = labelmaps.COLOR_TABLE_ATTRIBUTE
SEXES = ("unknown", "female", "male")
MODEL_REQUIREMENTS = dependencies.MODEL_REQUIREMENTS
DICOM_SEG_REQUIREMENTS = dependencies.DICOM_SEG_REQUIREMENTS
MODEL_OUTPUT_REFERENCE = modeloutput.MODEL_OUTPUT_REFERENCE
MODEL_ATTRIBUTE = modeloutput.MODEL_ATTRIBUTE
DEFAULT_MODEL_CHOICE = job.DEFAULT_MODEL_CHOICE
DICOM_FOLDER_ATTRIBUTE = dicomsource.FOLDER_ATTRIBUTE
DICOM_IDENTIFIER_TAGS = exports.DICOM_IDENTIFIER_TAGS
PARAMETER_ORDER = results_table.PARAMETER_ORDER
STRUCTURE_COLUMN, TYPE_COLUMN, FLAG_COLUMN, NOTES_COLUMN = table.STRUCTURE_COLUMN, table.TYPE_COLUMN, table.FLAG_COLUMN, table.NOTES_COLUMN
SegmentationJob = job.SegmentationJob


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
disc indices after BianqueNet (DH, DHI, HDR, delta SI; our own conventions) with z-scores against the project's
own healthy reference, a Pfirrmann grade estimate (not validated against graded images),
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
Disc parameters are defined after BianqueNet (Zheng et al., Nature Communications 13:841, 2022), measured with this
project's own conventions; z-scores use the project's own healthy reference built from the public volunteers above. Vertebra numbering follows VerSe (Sekuboyina et al., Medical Image Analysis 2021).
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
    partialMap, alsoAnnotated - "Export training case" of a partial map: only the structures present (and those
        listed) are annotated; fine-tuning leaves every other structure unknown (``exports.annotatedLevels``).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    model: Annotated[str, Default("default")]
    device: Annotated[str, Choice(list(DEVICES)), Default("auto")]
    segmentation: vtkMRMLSegmentationNode
    table: vtkMRMLTableNode
    sex: Annotated[str, Choice(list(SEXES)), Default("unknown")]
    age: Annotated[int, WithinRange(0, 120), Default(0)]
    autoUpdate: Annotated[bool, Default(True)]
    partialMap: Annotated[bool, Default(False)]
    alsoAnnotated: Annotated[str, Default("")]


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
        self._qualityBanner = None

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
        # follows the table node itself: a re-measurement in place does not modify the parameter node
        self._qualityBanner = banner.QualityBanner(self._showQuality)

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
        self.ui.markLevelsReviewedButton.connect("clicked(bool)", self.onMarkLevelsReviewedButton)
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
        if self._qualityBanner is not None:
            self._qualityBanner.stop()
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
        self._qualityBanner.setTable(None)
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
            matchingTable = self.logic.tableForSegmentation(matching, parameters.table)
            if matching is not parameters.segmentation or matchingTable is not parameters.table:
                with slicer.util.NodeModify(parameters.parameterNode):
                    parameters.segmentation = matching
                    parameters.table = matchingTable
                return  # the parameter node's Modified event runs _updateGui again
            try:
                self.logic.rescoreIfSubjectChanged(parameters.segmentation, parameters.inputVolume, parameters.table, **self._subject())
            except Exception as error:  # noqa: BLE001 - shown in the module's log; the table keeps its values
                logging.exception("SpineAnalysis: re-scoring for the new sex or age failed")
                self._log(_("Could not update the z-scores for the new sex or age: {error}").format(error=error))
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
        self.ui.alsoAnnotatedLineEdit.enabled = bool(parameters and parameters.partialMap)  # not used unless checked
        fromDicom = hasVolume and self.logic.hasDicomSource(parameters.inputVolume)
        self.ui.saveDicomSegButton.enabled = hasSegmentation and fromDicom and not running
        self.ui.saveDicomSegButton.toolTip = (
            _("Write the segmentation as DICOM SEG referencing the source series") if fromDicom else _("Load the volume from DICOM first (DICOM browser or 'Load DICOM folder...')")
        )
        self.ui.undoRenameButton.enabled = hasSegmentation and not running and self.logic.canUndoRelabel(parameters.segmentation)
        self.ui.markLevelsReviewedButton.enabled = hasSegmentation and not running
        reviewed = self.logic.levelsReviewed(parameters.segmentation) if hasSegmentation else None
        self.ui.markLevelsReviewedButton.text = _("Levels reviewed ({when}): mark again").format(when=reviewed) if reviewed else _("Mark levels reviewed")
        self._qualityBanner.setTable(parameters.table if parameters else None)
        if parameters:
            index = self.ui.modelComboBox.findData(parameters.model)
            if self.ui.modelComboBox.currentIndex != index:
                self.ui.modelComboBox.setCurrentIndex(index)  # -1 (blank) for a model typed as a folder path
        if hasSegmentation:
            names = self.logic.vertebraNames(parameters.segmentation)
            if names != [self.ui.renameSourceComboBox.itemText(i) for i in range(self.ui.renameSourceComboBox.count)]:
                self.ui.renameSourceComboBox.clear()
                self.ui.renameSourceComboBox.addItems(names)
        # the table of the selected volume's segmentation, or none: never another volume's numbers under this one
        if parameters and self.ui.resultsTableView.mrmlTableNode() != parameters.table:
            self.ui.resultsTableView.setMRMLTableNode(parameters.table)
        if parameters and hasSegmentation and hasVolume and parameters.autoUpdate:
            self.logic.observeSegmentation(parameters.segmentation, parameters.inputVolume, parameters.table, **self._subject())
        else:
            self.logic.stopObserving()

    def _showQuality(self, text: str) -> None:
        self.ui.qualityLabel.text = text
        self.ui.qualityLabel.visible = bool(text)

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
              "The existing one, with all its corrections, is kept, hidden and renamed '... (earlier)'.").format(
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
        status = ""
        try:
            with self._errors.action(_("The segmentation did not complete."), waitCursor=True):
                parameters = self._parameterNode
                segmentation, table = self.logic.completeSegmentation(job, **self._subject())
                parameters.segmentation = segmentation
                parameters.table = table
                self._log(_("Done: {name}").format(name=segmentation.GetName()))
                status = self.logic.earlierSegmentationsNote(segmentation)
                for line in (status, self.logic.deviceNote(segmentation, parameters.device)):
                    if line:
                        self._log(line)
        finally:
            job.cleanup()
            self._finishJobUi(status)

    def _finishJobUi(self, status: str = "") -> None:
        self._job = None
        self._pollTimer.stop()
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = status
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
            result = self.logic.exportTrainingCase(
                parameters.segmentation, parameters.inputVolume, folder, self.ui.caseIdLineEdit.text.strip() or None,
                partialMap=parameters.partialMap, alsoAnnotated=parameters.alsoAnnotated,
            )
            self.ui.trainingDatasetPathLineEdit.addCurrentPathToHistory()
            edited = ", ".join(result.provenance["edited_structures"]) or (_("none") if result.provenance["original_available"] else _("unknown (no model output kept)"))
            self._log(_("Exported case {case} to {folder}; edited: {edited}").format(case=result.case_id, folder=folder, edited=edited))
            note = self.logic.partialMapNote(result, parameters.partialMap)
            if note:
                self._log(note)

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

    def onMarkLevelsReviewedButton(self) -> None:
        with self._errors.action(_("Failed to mark the levels reviewed.")):
            when = self.logic.markLevelsReviewed(self._parameterNode.segmentation)
            self._log(_("Levels of {name} marked reviewed by the reader ({when}).").format(name=self._parameterNode.segmentation.GetName(), when=when))
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
        if parameters is None or not index.isValid() or not parameters.segmentation:  # None while the scene closes
            return
        name = index.sibling(index.row(), 0).data()  # first column: the structure's name
        if name and self.logic.segmentIdByName(parameters.segmentation, name):
            self.logic.jumpToLevel(parameters.segmentation, name)
        if parameters.table:
            self.logic.showLandmarks(parameters.table, index.row())  # where this row's values were measured

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


class SpineAnalysisLogic(ScriptedLoadableModuleLogic):
    """Scene-side work of the module, usable from scripts and tests without the GUI.

    A facade: each method is one call into ``SpineAnalysisSlicer`` (one job per file) or ``SpineAnalysisLib``.
    Its own state is the measurement tables (``table.MeasurementTables``) and the segmentation watcher
    (``watcher.SegmentationWatcher``), and the modality of each volume (``volumes.VolumeModalities``); changes the module makes to segments happen with the watcher paused.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.pendingChangedCallback = None  # set by the widget: restarts its debounce timer
        self._tables = table.MeasurementTables()
        self._watcher = watcher.SegmentationWatcher(onChange=self._notifyPending)
        self._modalities = volumes.VolumeModalities()
        _loadTerminology()

    def getParameterNode(self):
        return SpineAnalysisParameterNode(super().getParameterNode())

    def _notifyPending(self) -> None:
        if self.pendingChangedCallback is not None:
            self.pendingChangedCallback()

    # -- colour table, terminology, segments ----------------------------------------------------------
    getColorTableNode = staticmethod(labelmaps.getColorTableNode)
    terminologyEntry = staticmethod(terminology.serializedEntry)
    labelOfSegment = staticmethod(segments.labelOfSegment)
    segmentIds = staticmethod(segments.segmentIds)
    segmentIdByName = staticmethod(segments.segmentIdByName)
    segmentLabels = staticmethod(segments.segmentLabels)
    vertebraNames = staticmethod(segments.vertebraNames)
    levelCentroidRAS = staticmethod(segments.levelCentroidRAS)
    jumpToLevel = staticmethod(segments.jumpToLevel)
    show3D = staticmethod(segments.show3D)

    def applySchemeToSegment(self, segment):
        with self._watcher.paused():
            return segments.applySchemeToSegment(segment)

    def applyScheme(self, segmentationNode) -> None:
        with self._watcher.paused():
            segments.applyScheme(segmentationNode)

    # -- volumes, loading, label maps -----------------------------------------------------------------
    volumeNodeToSitk = staticmethod(volumes.volumeNodeToSitk)
    sitkToVolumeNode = staticmethod(volumes.sitkToVolumeNode)
    segmentationToLabelArray = staticmethod(labelmaps.segmentationToLabelArray)
    segmentationToLabelMap = staticmethod(labelmaps.segmentationToLabelMap)
    segmentationsOfVolume = staticmethod(labelmaps.segmentationsOfVolume)
    segmentationForVolume = staticmethod(labelmaps.segmentationForVolume)

    def loadInputs(self, imagePath: str, labelPath=None):
        """Load an MRI (file or DICOM folder) and optionally its segmentation (label image, .seg.nrrd or DICOM
        SEG .dcm); returns ``(volumeNode, segmentationNode or None)``. Names, colours and terminology follow the
        label scheme."""
        volumeNode = inputs.loadVolume(imagePath)
        if not labelPath:
            return volumeNode, None
        with self._watcher.paused():
            return volumeNode, inputs.loadSegmentation(labelPath, volumeNode)

    def importLabelMap(self, labelMap, volumeNode, segmentationNode=None, name=None):
        """Named segments from a label map (SimpleITK image or labelmap node); see ``labelmaps.importLabelMap``."""
        with self._watcher.paused():
            segmentationNode = labelmaps.importLabelMap(labelMap, volumeNode, segmentationNode, name)
        self._watcher.markAllDirty(segmentationNode)
        return segmentationNode

    # -- measurements ---------------------------------------------------------------------------------
    def measure(self, segmentationNode, volumeNode, labels=None, sex=None, age=None) -> list:
        """``SpineAnalysisLib.measure_segmentation.measure_segmentation`` (``measure_case``, CT-aware) on the current
        segmentation."""
        return self.measureWithLandmarks(segmentationNode, volumeNode, labels=labels, sex=sex, age=age).measurements

    def measureWithLandmarks(self, segmentationNode, volumeNode, labels=None, sex=None, age=None):
        """:meth:`measure`'s whole result: ``.measurements`` and ``.landmarks`` (where each value was measured, LPS)."""
        if segmentationNode is None or volumeNode is None:
            raise spineErrors.InputError(_("select an input volume and a segmentation"))
        image = volumes.volumeNodeToSitk(volumeNode)
        detected = self._modalities.detect(volumeNode, image)  # once per volume, not again on every edit
        if not otherschemes.namedByOurScheme(segmentationNode):  # e.g. a SlicerTotalSegmentator segmentation
            return self.measureOtherScheme(segmentationNode, volumeNode, image, sex=sex, age=age, detected=detected)
        labelMap = labelmaps.segmentationToLabelMap(segmentationNode, volumeNode)
        return measure_segmentation(
            image, labelMap, label_scheme="spineanalysis", sex=results_table.subject_sex(sex), age=results_table.subject_age(age),
            labels=(sorted(labels) if labels is not None else None), detected=detected,
        )

    measureOtherScheme = staticmethod(otherschemes.measureOtherScheme)

    def updateTable(self, segmentationNode, volumeNode, tableNode=None, labels=None, sex=None, age=None):
        """Measure and show the results in a table node (one row per structure); returns the table node.

        With ``labels`` only those structures are measured again; the other rows are kept. A table node is
        created (next to the volume in the subject hierarchy) when none is given.
        """
        result = self.measureWithLandmarks(segmentationNode, volumeNode, labels=labels, sex=sex, age=age)
        tableNode = self._tables.show(tableNode, result.measurements, segmentationNode, volumeNode, labels=labels, sex=sex, age=age)
        landmarks.storeLandmarks(tableNode, result.landmarks, labels)
        landmarks.refresh(tableNode)  # the row shown before: hidden, drawn again from the new landmarks
        watcher.recordMeasured(tableNode, segmentationNode, labels)  # edits made while nothing watches are found later
        table.markOutOfDate(tableNode, None)
        if labels is None:
            self._watcher.measuredAll(segmentationNode, tableNode)
        return tableNode

    def rescoreIfSubjectChanged(self, segmentationNode, volumeNode, tableNode, sex=None, age=None) -> bool:
        """Re-score the table when its z-scores were computed for another sex or age; True when it did. The
        library does it (``normative.score`` and the one flag rule), without measuring again."""
        if volumeNode is None or not self._tables.has(tableNode) or not table.measuresSegmentation(tableNode, segmentationNode):
            return False
        if self._tables.isForSubject(tableNode, sex, age):
            return False
        self._tables.rescore(tableNode, segmentationNode, sex, age)
        if self._watcher.watches(segmentationNode):  # later edits are scored for the new subject too
            self._watcher.observe(segmentationNode, volumeNode, tableNode, sex, age)
        return True

    def measurementsOfTable(self, tableNode) -> list:
        """The Measurement objects shown in a table, with values the user edited in the table."""
        return self._tables.measurementsOf(tableNode)

    def clearMeasurements(self) -> None:
        """Forget every table's measurements (the widget calls it when the scene closes)."""
        self._tables.clear()

    tableForSegmentation = staticmethod(table.tableForSegmentation)
    landmarksOfTable = staticmethod(landmarks.landmarksOf)
    landmarkNodes = staticmethod(landmarks.markupsOf)

    def showLandmarks(self, tableNode, row: int) -> list:
        """Show where the values of table row ``row`` were measured (markups, RAS), replacing the previous row's;
        returns the markups nodes."""
        key = landmarks.rowOf(tableNode, row)
        return landmarks.showRow(tableNode, *key) if key else []
    levelsReviewed = staticmethod(review.levelsReviewed)

    def markLevelsReviewed(self, segmentationNode) -> str:
        """The reader has checked (and corrected) the level names of ``segmentationNode``: recorded on the node (saved
        with the scene), and every table measuring it is assessed again without measuring. The labelling findings of
        the model run ("levels uncertain", low confidence) then stop lowering the status and are shown as "levels
        reviewed by the reader (model said: ...)"; the values' own plausibility gates stay (``quality.assess``). A
        new model run makes a new segmentation, without the review. Returns the time recorded (UTC)."""
        if segmentationNode is None:
            raise spineErrors.InputError(_("select a segmentation"))
        when = review.markLevelsReviewed(segmentationNode)
        for tableNode in table.tablesOfSegmentation(segmentationNode):
            self._tables.reassess(tableNode, segmentationNode)
        return when

    flagsOf = staticmethod(table.flagsOf)
    qualityText = staticmethod(table.qualityText)
    tableValue = staticmethod(table.tableValue)
    structureNameOfRow = staticmethod(table.structureNameOfRow)

    # -- exports --------------------------------------------------------------------------------------
    def measurementsToExport(self, tableNode) -> list:
        """:meth:`measurementsOfTable` of a table that shows its segmentation as it is now: a pending edit of the
        watched segmentation is measured first (the widget's debounce timer may not have fired); a table that could
        not follow a change, or whose segmentation changed while nothing watched, is refused (InputError)."""
        segmentationNode = tableNode.GetNodeReference(table.SEGMENTATION_REFERENCE) if tableNode is not None else None
        if self._watcher.watches(segmentationNode):
            self.recomputeDirty()
        if tableNode is not None and tableNode.GetAttribute(table.OUT_OF_DATE_ATTRIBUTE):
            raise spineErrors.InputError(table.qualityText(tableNode))
        if segmentationNode is not None:
            full, labels = watcher.changesSince(tableNode, segmentationNode)
            if full or labels:
                what = _("its segments were added, removed or renamed") if full else ", ".join(sorted(scheme.structure_name(label) for label in labels))
                raise spineErrors.InputError(
                    _("the segmentation changed since it was measured ({what}): measure again before exporting").format(what=what)
                )
        return self.measurementsOfTable(tableNode)

    def exportMeasurements(self, tableNode, outputDirectory: str, volumeNode=None, overwrite: bool = False):
        """``<image>_measurements.csv``/``.json`` of the table as shown (``exports.exportMeasurements``), never of
        numbers from before the last correction (:meth:`measurementsToExport`)."""
        return exports.exportMeasurements(self.measurementsToExport(tableNode), tableNode, outputDirectory, volumeNode, overwrite)

    dicomIdentifiers = staticmethod(exports.dicomIdentifiers)

    def exportStructuredMeasurements(self, tableNode, volumeNode, path: str, includePatientId: bool = True):
        """One CSV row per value with the DICOM identifiers (``exports.exportStructuredMeasurements``)."""
        return exports.exportStructuredMeasurements(self.measurementsToExport(tableNode), tableNode, volumeNode, path, includePatientId)

    saveSegmentation = staticmethod(exports.saveSegmentation)
    exportTrainingCase = staticmethod(exports.exportTrainingCase)
    partialMapNote = staticmethod(exports.partialMapNote)
    hasDicomSource = staticmethod(dicomsource.hasDicomSource)

    @staticmethod
    def exportDicomSeg(segmentationNode, volumeNode, path: str, sourceFolder=None, dicomDatabase=None) -> str:
        """DICOM SEG referencing the volume's series (``exports.exportDicomSeg``); the DICOM browser's database
        is ``slicer.dicomDatabase`` unless given."""
        database = dicomDatabase if dicomDatabase is not None else getattr(slicer, "dicomDatabase", None)
        return exports.exportDicomSeg(segmentationNode, volumeNode, path, sourceFolder, database)

    # -- recomputation after edits --------------------------------------------------------------------
    def observeSegmentation(self, segmentationNode, volumeNode, tableNode=None, sex=None, age=None) -> None:
        """Watch a segmentation: a segment whose voxels change marks its structure for re-measuring
        (``watcher.SegmentationWatcher``). The widget debounces with a timer started from
        ``pendingChangedCallback``; scripts and tests call :meth:`recomputeDirty` themselves."""
        self._watcher.observe(segmentationNode, volumeNode, tableNode, sex, age)

    def stopObserving(self) -> None:
        self._watcher.stop()

    segmentFingerprint = staticmethod(watcher.segmentFingerprint)
    labelsToRemeasure = staticmethod(watcher.labelsToRemeasure)

    @property
    def pendingLabels(self) -> set:
        """Labels whose voxels changed and that wait to be measured again (empty when nothing is observed)."""
        self._watcher.collectChanges()
        return set(self._watcher.pending)

    @property
    def fullRecomputePending(self) -> bool:
        """True after segments were added, removed or renamed (or a segment named by another tool was edited): the
        next recomputation measures everything."""
        self._watcher.collectChanges()
        return self._watcher.full

    def recomputeDirty(self):
        """Measure again what changed since the last call; returns the updated table node (None if nothing to do).
        A failure (e.g. an emptied segmentation) keeps the changes pending for the next attempt and marks the table
        out of date (its quality banner says so) until a measurement succeeds."""
        work = self._watcher.work(self._tables.has)
        if work is None:
            return None
        segmentationNode, volumeNode, tableNode, labels, pending = work
        try:
            tableNode = self.updateTable(segmentationNode, volumeNode, tableNode, labels=labels, sex=self._watcher.sex, age=self._watcher.age)
        except Exception as error:
            if tableNode is not None:
                table.markOutOfDate(tableNode, str(error))
            raise
        self._watcher.done(pending, labels, tableNode)
        return tableNode

    # -- relabelling ----------------------------------------------------------------------------------
    def relabel(self, segmentationNode, mapping: dict) -> dict:
        """Rename vertebrae (``{"L3": "L4"}``), discs following; undoable (``segments.relabel``)."""
        with self._watcher.paused():
            renamed = segments.relabel(segmentationNode, mapping)
        self._watcher.markAllDirty(segmentationNode)
        return renamed

    def shiftLevels(self, segmentationNode, delta: int, segmentNames=None) -> dict:
        """Move every vertebra name ``delta`` levels caudally (+1: L3 -> L4) or cranially (-1); discs follow."""
        names = list(segmentNames) if segmentNames is not None else segments.vertebraNames(segmentationNode)
        return self.relabel(segmentationNode, relabelling.shift_mapping(names, delta))

    def renameVertebra(self, segmentationNode, oldName: str, newName: str) -> dict:
        """Rename one vertebra (e.g. "S1" -> "L6" for a transitional vertebra); its discs follow."""
        if not newName or not newName.strip():
            raise ValueError("enter the new name of the vertebra")
        return self.relabel(segmentationNode, {oldName: newName.strip()})

    @staticmethod
    def canUndoRelabel(segmentationNode) -> bool:
        return segmentationNode is not None and bool(segments.renameHistory(segmentationNode))

    def undoRelabel(self, segmentationNode) -> dict:
        """Give back the names before the last Shift/Rename; returns ``{name now: name again}``."""
        with self._watcher.paused():
            renamed = segments.undoRelabel(segmentationNode)
        self._watcher.markAllDirty(segmentationNode)
        return renamed

    # -- running the model ----------------------------------------------------------------------------
    @staticmethod
    def missingDependencies(requirements=MODEL_REQUIREMENTS) -> list:
        """Requirements (default: the model's) that are not importable."""
        return dependencies.missing(requirements)

    def ensureDependencies(self, askConfirmation: bool = True, requirements=MODEL_REQUIREMENTS) -> bool:
        """Make ``requirements`` (default: torch and MONAI; ``DICOM_SEG_REQUIREMENTS`` for DICOM SEG) importable,
        installing them into Slicer's Python after asking once (``SpineAnalysisSlicer.dependencies``). Never
        installs while Slicer runs its tests or outside the application; False also when the user declines."""
        confirm = slicer.util.confirmOkCancelDisplay if askConfirmation and _inApplication() else None
        return dependencies.ensure(
            requirements, confirm=confirm, inApplication=_inApplication(), testing=_isTesting(), installTorch=self._torchInstaller(),
            pipEnsure=dependencies.findPipEnsure(), pipInstall=getattr(slicer.util, "pip_install", None),
        )  # fmt: skip

    @staticmethod
    def _torchInstaller():
        """The PyTorch extension's installer (it picks a torch build for the GPU driver); None without it."""
        try:
            import PyTorchUtils
        except ImportError:
            return None
        return lambda: PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=">=2.2")

    def runSegmentation(self, volumeNode, model=None, device="auto", synchronous=True, progressCallback=None):
        """Segment ``volumeNode`` with the model into a *new* segmentation node: an earlier segmentation (and
        every correction in it) is never overwritten nor removed; it is hidden and named as the earlier one.

        ``synchronous=True`` runs ``SpineAnalysisLib.inference.segment_image`` here and returns the segmentation
        node (blocks the GUI: for scripts and tests). ``synchronous=False`` starts a background process and
        returns a :class:`SegmentationJob`; poll it, then call :meth:`completeSegmentation`.
        """
        if volumeNode is None:
            raise spineErrors.InputError(_("select an input volume"))
        modelName = None if not model or model == DEFAULT_MODEL_CHOICE else model
        if not synchronous:
            return self.startSegmentation(volumeNode, modelName, device)
        inference = importlib.import_module("SpineAnalysisLib.inference")  # needs torch: imported on first use

        def report(fraction, message=""):
            if progressCallback is not None:
                progressCallback(fraction, message)

        result = inference.segment_image(volumes.volumeNodeToSitk(volumeNode), model_name=modelName, device=device or "auto", progress=report)
        labelImage = getattr(result, "label_map", result)
        return self._modelSegmentation(labelImage, volumeNode, getattr(result, "model", None) or modelName or DEFAULT_MODEL_CHOICE)

    def _modelSegmentation(self, labelImage, volumeNode, model, summary=None):
        """A new segmentation of ``volumeNode`` from a model run's label map; the volume's earlier segmentations are
        kept but hidden and named as earlier ones (``earlier.setAside``)."""
        segmentationNode = self.importLabelMap(labelImage, volumeNode, name=labelmaps.newSegmentationName(volumeNode))
        earlier.setAside(segmentationNode, volumeNode)
        modeloutput.rememberModelOutput(segmentationNode, labelImage, model, summary)
        return segmentationNode

    earlierSegmentationsNote = staticmethod(earlier.note)

    @staticmethod
    def segmentationCommand(inputPath: str, outputPath: str, model=None, device="auto", summaryPath=None) -> list:
        """The command line of a background segmentation (``python -m SpineAnalysisLib segment ...``)."""
        python = shutil.which("PythonSlicer") if _inApplication() else None
        return job.segmentationCommand(inputPath, outputPath, model, device, python, summaryPath)

    @staticmethod
    def startSegmentation(volumeNode, model=None, device="auto", command=None) -> SegmentationJob:
        """Start a background segmentation of ``volumeNode`` (``job.startJob``); ``command`` replaces the command
        line (tests), with ``{input}``/``{output}`` replaced by the file paths."""
        python = shutil.which("PythonSlicer") if _inApplication() else None
        return job.startJob(volumeNode, _LIBRARY_PARENT, model, device, command, python)

    def finishSegmentation(self, segmentationJob: SegmentationJob):
        """Load the label map of a finished job into a new segmentation node; raises ``SpineAnalysisError`` with
        the reason when the job failed or was cancelled. The job's temporary files are removed."""
        segmentationJob.poll()
        if segmentationJob.is_running:
            raise spineErrors.SpineAnalysisError(_("the segmentation is still running"))
        try:
            if not segmentationJob.succeeded:
                raise spineErrors.SpineAnalysisError(segmentationJob.failureMessage())
            volumeNode = slicer.mrmlScene.GetNodeByID(segmentationJob.volumeNodeID)
            if volumeNode is None:
                raise spineErrors.SpineAnalysisError(_("the input volume was removed while it was being segmented"))
            labelImage = spineIO.read_label_map(segmentationJob.outputPath)
            return self._modelSegmentation(labelImage, volumeNode, segmentationJob.modelUsed(), segmentationJob.summary())
        finally:
            segmentationJob.cleanup()

    def completeSegmentation(self, segmentationJob: SegmentationJob, sex=None, age=None):
        """The end of a background run in one call: load the result into a new segmentation and measure it into
        a new table. Returns ``(segmentationNode, tableNode)``; any failure raises one error whose message says
        what went wrong (the widget shows it once)."""
        segmentationNode = self.finishSegmentation(segmentationJob)
        volumeNode = slicer.mrmlScene.GetNodeByID(segmentationJob.volumeNodeID)
        return segmentationNode, self.updateTable(segmentationNode, volumeNode, None, sex=sex, age=age)

    # -- annotators' loop -----------------------------------------------------------------------------
    rememberModelOutput = staticmethod(modeloutput.rememberModelOutput)
    deviceNote = staticmethod(modeloutput.deviceNote)
    modelOutput = staticmethod(modeloutput.modelOutput)
    availableModels = staticmethod(modeloutput.availableModels)


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
        if not (os.path.isfile(imagePath) and os.path.isfile(labelPath)):  # reported as skipped, never as passed
            raise unittest.SkipTest(f"no bundled sample in {folder}")
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
