"""A segmentation running in a background process (``python -m SpineAnalysisLib segment ... --progress
--summary RESULT.json``), so that Slicer stays responsive; the widget polls it with a timer (the one progress line
format of ``SpineAnalysisLib.background``) and reads the result from the CLI's JSON summary, not from its text.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from SpineAnalysisLib import imageio as spineIO
from SpineAnalysisLib.background import BackgroundProcess

from . import volumes
from .compat import _

DEFAULT_MODEL_CHOICE = "default"


class SegmentationJob:
    """One background run: its process, temporary folder, the volume it segments and where its result goes."""

    def __init__(self, process: BackgroundProcess, workDir: str, volumeNodeID: str, outputPath: str, model: str = DEFAULT_MODEL_CHOICE):
        self.process = process
        self.workDir = workDir
        self.volumeNodeID = volumeNodeID
        self.outputPath = outputPath
        self.summaryPath = os.path.join(workDir, "summary.json")  # written by the CLI's --summary
        self.model = model

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

    def summary(self) -> dict:
        """The CLI's JSON summary of the run (levels, confidence, levels_uncertain, flags, warnings, model...);
        {} when it wrote none."""
        try:
            with open(self.summaryPath, encoding="utf-8") as stream:
                summary = json.load(stream)
        except (OSError, ValueError):
            return {}
        return summary if isinstance(summary, dict) else {}

    def modelUsed(self) -> str:
        """The model the run used (its summary's ``model``), else the model asked for."""
        return str(self.summary().get("model") or self.model or DEFAULT_MODEL_CHOICE)


def segmentationCommand(inputPath: str, outputPath: str, model=None, device="auto", python=None, summaryPath=None) -> list:
    """The command line of a background segmentation (``python -m SpineAnalysisLib segment ...``)."""
    command = [python or sys.executable, "-m", "SpineAnalysisLib", "segment", inputPath, "-o", outputPath, "--device", device or "auto", "--progress"]
    if summaryPath:
        command += ["--summary", summaryPath]
    if model:
        command += ["--model", model]
    return command


def startJob(volumeNode, libraryParent: str, model=None, device="auto", command=None, python=None) -> SegmentationJob:
    """Write the volume to a temporary NIfTI file and start the segmentation in a background process.

    ``command`` replaces the default command line (tests); ``{input}``, ``{output}`` and ``{summary}`` in it are
    replaced by the file paths. ``libraryParent`` (the folder holding SpineAnalysisLib) goes on the child's PYTHONPATH.
    """
    workDir = tempfile.mkdtemp(prefix="SpineAnalysis-")
    inputPath = os.path.join(workDir, "input.nii.gz")
    outputPath = os.path.join(workDir, "labels.nii.gz")
    summaryPath = os.path.join(workDir, "summary.json")
    try:
        spineIO.write_image(volumes.volumeNodeToSitk(volumeNode), inputPath)
        if command is None:
            args = segmentationCommand(inputPath, outputPath, model, device, python, summaryPath)
        else:
            args = [str(a).replace("{input}", inputPath).replace("{output}", outputPath).replace("{summary}", summaryPath) for a in command]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (libraryParent, env.get("PYTHONPATH", "")) if p)
        if device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = "-1"
        process = BackgroundProcess(args, env=env, cwd=libraryParent).start()
    except BaseException:
        shutil.rmtree(workDir, ignore_errors=True)
        raise
    return SegmentationJob(process, workDir, volumeNode.GetID(), outputPath, model or DEFAULT_MODEL_CHOICE)
