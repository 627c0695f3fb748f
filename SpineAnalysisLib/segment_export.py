"""Segments -> label values on a volume's voxel grid, through Slicer's segmentations logic.

One function for the Slicer module (``SpineAnalysisSlicer.labelmaps``) and the web review page
(``web.scene``): both hold MRML nodes, in 3D Slicer or in slicer-core without Qt. Nothing here imports Qt or
``slicer.app``; ``slicer`` itself is imported only when the function runs.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError


def array_of_volume(node) -> np.ndarray:
    """The voxels of a volume node as a (k, j, i) array (a view on the VTK buffer)."""
    from vtkmodules.util import numpy_support

    image = node.GetImageData()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])


def segments_to_label_array(segmentations_logic, segmentation_node, labels: dict, reference_volume_node) -> np.ndarray:
    """Each segment of ``labels`` (segment id -> label value) as its value, 0 elsewhere: a (k, j, i) uint16
    array on ``reference_volume_node``'s grid, in that node's voxel order. ``labels`` must not be empty."""
    import slicer
    from vtkmodules.vtkCommonCore import vtkStringArray

    scene = segmentation_node.GetScene()
    segmentation = segmentation_node.GetSegmentation()
    colors = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "__spineanalysis_export__")
    label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__spineanalysis_export__")
    try:
        colors.SetTypeToUser()
        colors.SetNumberOfColors(max(labels.values()) + 1)
        for index in range(colors.GetNumberOfColors()):
            colors.SetColor(index, "", 0.0, 0.0, 0.0, 0.0)
            colors.SetColorDefined(index, False)
        ids = vtkStringArray()
        for segment_id, label in labels.items():
            # the export gives each segment the value of the colour named like the segment
            colors.SetColor(label, segmentation.GetSegment(segment_id).GetName(), 1.0, 1.0, 1.0, 1.0)
            ids.InsertNextValue(segment_id)
        extent = slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
        if not segmentations_logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, label_node, reference_volume_node, extent, colors):
            raise InputError("the segmentation could not be exported to a label map")
        return np.array(array_of_volume(label_node), dtype=np.uint16, copy=True)
    finally:
        for node in (label_node.GetDisplayNode(), label_node.GetStorageNode(), label_node, colors):
            if node is not None and node.GetScene() is not None:
                scene.RemoveNode(node)
