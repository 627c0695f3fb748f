"""Segmentations whose segments are named by another tool (SlicerTotalSegmentator's "vertebrae_L1" /
"L1 vertebra" / SNOMED CT terminology, with its vertebrae_body segments as bodies): measured as they are,
without renaming, through ``SpineAnalysisLib.label_schemes.plan_segments`` and ``measure_segmentation``
(docs/label-schemes.md). This is the module's one place for other label schemes.
"""

from __future__ import annotations

import slicer
from SpineAnalysisLib import label_schemes, results_table
from SpineAnalysisLib import labels as scheme
from SpineAnalysisLib.measure_segmentation import measure_segmentation

from . import compat, segments


def namedByOurScheme(segmentationNode) -> bool:
    """True when at least one vertebra segment carries one of our names ("L4", "S1", ...)."""
    return any(scheme.is_vertebra(label) for label in segments.segmentLabels(segmentationNode).values())


def measureOtherScheme(segmentationNode, volumeNode, image, sex=None, age=None, detected=None):
    """``measure_segmentation`` of a segmentation named by another tool; returns its result (``.measurements``).
    ``detected``: the image's modality when the caller has it (``volumes.VolumeModalities``)."""
    segmentation = segmentationNode.GetSegmentation()
    plan = label_schemes.plan_segments(
        [(i, segmentation.GetSegment(i).GetName(), compat.segmentTerminology(segmentation.GetSegment(i))) for i in segments.segmentIds(segmentationNode)]
    )
    labelMap, bodies = label_schemes.label_maps_from_segments(
        plan, lambda segmentId: slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode), image
    )
    return measure_segmentation(image, labelMap, label_scheme=plan.scheme, bodies=bodies,
                                sex=results_table.subject_sex(sex), age=results_table.subject_age(age), detected=detected)  # fmt: skip
