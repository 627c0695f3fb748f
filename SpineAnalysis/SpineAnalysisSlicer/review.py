"""The reader's review of the level names: "Mark levels reviewed" records when the reader checked (and corrected)
the levels of a segmentation, on the segmentation node itself (an attribute, saved with the scene). The quality
status reads it (``SpineAnalysisLib.quality.assess``, the one rule of what such a review answers). A new model run
makes a new segmentation node without it; a run written into an existing node clears it
(``modeloutput.rememberModelOutput``)."""

from __future__ import annotations

import datetime

#: Segmentation node attribute: when the reader reviewed the level names (ISO 8601, UTC); absent: not reviewed.
LEVELS_REVIEWED_ATTRIBUTE = "SpineAnalysis.LevelsReviewed"


def levelsReviewed(segmentationNode):
    """When the levels of ``segmentationNode`` were reviewed (text), or None."""
    return (segmentationNode.GetAttribute(LEVELS_REVIEWED_ATTRIBUTE) or None) if segmentationNode is not None else None


def markLevelsReviewed(segmentationNode, when=None) -> str:
    """Record that the reader reviewed the levels now (or ``when``); returns the time recorded."""
    when = when or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    segmentationNode.SetAttribute(LEVELS_REVIEWED_ATTRIBUTE, when)
    return when


def clearLevelsReviewed(segmentationNode) -> None:
    segmentationNode.RemoveAttribute(LEVELS_REVIEWED_ATTRIBUTE)
