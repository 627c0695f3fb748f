"""Volume nodes <-> SimpleITK images (patient-space geometry kept), and small node chores."""

from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from SpineAnalysisLib import errors as spineErrors
from SpineAnalysisLib import modality

from .compat import _

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


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
    axes = _RAS_TO_LPS @ matrix[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    array = slicer.util.arrayFromVolume(volumeNode)
    if array.ndim != 3:
        raise spineErrors.InputError(_("{name} is not a scalar 3D volume").format(name=volumeNode.GetName()))
    image = sitk.GetImageFromArray(np.array(array, copy=True))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(v) for v in _RAS_TO_LPS @ matrix[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (axes / spacing).ravel()))
    return image


class VolumeModalities:
    """``SpineAnalysisLib.modality.detect`` of each volume node, kept while its voxels stay the same, so that re-measuring
    after a segmentation edit does not detect it again (a full pass over the voxels)."""

    def __init__(self) -> None:
        self._known = {}  # node ID -> (voxels' modification time, (modality, how it was decided))

    def detect(self, volumeNode, image: sitk.Image) -> tuple:
        """(modality, how it was decided) of ``image``, the voxels of ``volumeNode`` (``volumeNodeToSitk``)."""
        stamp = volumeNode.GetImageData().GetMTime()  # VTK's global counter: changes with the voxels or a new image
        known = self._known.get(volumeNode.GetID())
        if known is None or known[0] != stamp:
            known = self._known[volumeNode.GetID()] = (stamp, modality.detect(image))
        return known[1]


def sitkToVolumeNode(image: sitk.Image, volumeNode=None, name=None, labelmap: bool = False):
    """Put a SimpleITK image (LPS) into a volume node (created when not given), geometry included."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise spineErrors.InputError(_("a scalar 3D image is needed"))
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = _RAS_TO_LPS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = _RAS_TO_LPS @ np.asarray(image.GetOrigin(), dtype=float)
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


def baseName(path: str) -> str:
    """File or folder name without the image suffix ("case.nii.gz" -> "case")."""
    name = os.path.basename(os.path.normpath(path))
    for suffix in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def nodesOfClass(className: str) -> list:
    """The scene's nodes of ``className`` in scene order (oldest first)."""
    scene = slicer.mrmlScene
    return [scene.GetNthNodeByClass(index, className) for index in range(scene.GetNumberOfNodesByClass(className))]


def removeNode(node) -> None:
    """Remove a node with its display and storage nodes."""
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


def placeNextTo(node, volumeNode) -> None:
    """Put ``node`` in the same subject hierarchy folder (patient/study) as ``volumeNode``."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    if shNode is None or volumeNode is None:
        return
    volumeItem = shNode.GetItemByDataNode(volumeNode)
    item = shNode.GetItemByDataNode(node)
    if volumeItem and item:
        shNode.SetItemParent(item, shNode.GetItemParent(volumeItem))
