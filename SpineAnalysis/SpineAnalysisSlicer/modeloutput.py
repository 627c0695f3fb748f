"""The model's own output kept beside the segmentation it created (a hidden label map node, saved with the
scene), so that a corrected segmentation can be exported with the original and its edits named; and the
list of models to choose from."""

from __future__ import annotations

import json

import SimpleITK as sitk
from SpineAnalysisLib.model import catalog

from . import review, volumes
from .compat import _
from .job import DEFAULT_MODEL_CHOICE

#: Node reference from a segmentation to the hidden label map of the model output it started from.
MODEL_OUTPUT_REFERENCE = "SpineAnalysisModelOutput"
#: Attribute (on the segmentation and on the model-output label map) naming the model that produced it.
MODEL_ATTRIBUTE = "SpineAnalysis.Model"
#: Segmentation node attribute: the run's labelling summary (JSON from ``segment --summary``), for its quality status.
SUMMARY_ATTRIBUTE = "SpineAnalysis.Summary"


def runSummary(segmentationNode) -> dict:
    """The labelling summary of the run that made ``segmentationNode`` ({} for a loaded or drawn one)."""
    try:
        summary = json.loads(segmentationNode.GetAttribute(SUMMARY_ATTRIBUTE) or "{}") if segmentationNode is not None else {}
    except ValueError:
        return {}
    return summary if isinstance(summary, dict) else {}


def deviceNote(segmentationNode, requestedDevice) -> str:
    """The line to show when "auto" found no GPU and the run fell back to the CPU (its summary's ``device``);
    "" otherwise. A run asked for "cuda" without a GPU fails with the command line's own message instead."""
    ran = str(runSummary(segmentationNode).get("device") or "")
    if (requestedDevice or "auto") == "auto" and ran == "cpu":
        return _("No GPU was found: the model ran on the CPU (slower; install a CUDA build of PyTorch for a GPU).")
    return ""


def rememberModelOutput(segmentationNode, labelImage, model: str, summary=None):
    """Keep ``labelImage`` as the model output of ``segmentationNode`` (and the run's summary); returns the
    label map node. A review of the levels of an earlier run in this node no longer holds: it is cleared."""
    review.clearLevelsReviewed(segmentationNode)
    if summary:
        segmentationNode.SetAttribute(SUMMARY_ATTRIBUTE, json.dumps(summary))
    outputNode = segmentationNode.GetNodeReference(MODEL_OUTPUT_REFERENCE)
    outputNode = volumes.sitkToVolumeNode(labelImage, outputNode, name=f"{segmentationNode.GetName()} model output", labelmap=True)
    outputNode.SetHideFromEditors(True)
    outputNode.SetAttribute(MODEL_ATTRIBUTE, str(model))
    segmentationNode.SetAttribute(MODEL_ATTRIBUTE, str(model))
    segmentationNode.SetNodeReferenceID(MODEL_OUTPUT_REFERENCE, outputNode.GetID())
    return outputNode


def modelOutput(segmentationNode):
    """``(label map, model name)`` of the model run that created ``segmentationNode``; ``(None, None)`` for a
    segmentation that was loaded or drawn."""
    if segmentationNode is None:
        return None, None
    outputNode = segmentationNode.GetNodeReference(MODEL_OUTPUT_REFERENCE)
    if outputNode is None or outputNode.GetImageData() is None:
        return None, None
    image = volumes.volumeNodeToSitk(outputNode)
    image = sitk.Cast(image, sitk.sitkUInt16) if image.GetPixelID() != sitk.sitkUInt16 else image
    return image, outputNode.GetAttribute(MODEL_ATTRIBUTE) or segmentationNode.GetAttribute(MODEL_ATTRIBUTE)


def availableModels() -> list:
    """``(text, model)`` pairs for the model selector: the default model first, then every model on the search
    path (``SpineAnalysisLib.model.catalog``, which needs no torch)."""
    models = [(_("default (shipped model)"), DEFAULT_MODEL_CHOICE)]
    for info in catalog.list_models():
        models.append((info.label, f"{info.name}@{info.version}"))
    return models
