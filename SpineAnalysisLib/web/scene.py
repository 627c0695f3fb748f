"""The review page's MRML side: input volume, segmentation, measurements, navigation, exports.

Works on the scene of a ``trame_slicer.core.SlicerApp`` (slicer-core, no Qt). Images are read by Slicer's
own volume reader, so their RAS placement is exactly what 3D Slicer shows; the SimpleITK copy of the same
file feeds the library (measurements, segmentation job). Label values, names and colours come from
:mod:`SpineAnalysisLib.labels`; other tools' label maps (TotalSegmentator, VerSe/TPTBox, SPINEPS) are read
through :func:`SpineAnalysisLib.label_schemes.translate`; measurements come from
:func:`SpineAnalysisLib.measure_segmentation.measure_segmentation`, as ``spineanalysis measure`` makes them
(on CT: no MR signal parameters, ``trabecular_hu`` added).

A CT is opened only together with its segmentation (segmenting CT stays refused, see ``inference.py``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkCommonDataModel import vtkImageData

from .. import imageio, label_schemes, modality
from .. import labels as scheme
from ..annotation import case_segment_names
from ..errors import InputError
from ..measure_segmentation import measure_segmentation
from ..measurements import Measurement
from ..relabel import plan_relabel, shift_mapping
from ..segment_export import array_of_volume, segments_to_label_array
from ..segment_scheme import apply_scheme_to_segment, label_of_name
from .navigation import where_to_look


def _slicer():
    import slicer  # slicer-core (trame-slicer's environment)

    return slicer


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def check_modality(image: sitk.Image, path: Path, with_labels: bool) -> tuple[str, str]:
    """(modality, how it was decided); a CT is refused unless its segmentation comes with it (the page
    segments MRI only; segmenting CT stays refused until a validated CT model exists)."""
    kind, source = modality.detect(image)
    if kind == modality.CT and not with_labels:
        raise InputError(
            f"{path.name}: this looks like a CT volume ({source}); the page segments MRI only: "
            "review a CT with its segmentation (spineanalysis review CT LABELS --label-scheme auto [--bodies BODY_MAP])"
        )
    return kind, source


def read_labels(path, image: sitk.Image, label_scheme: str = "auto", bodies=None) -> label_schemes.Translation:
    """A label map of ``image`` (its grid) in any scheme of :mod:`SpineAnalysisLib.label_schemes`, read into
    ours (``bodies``: the body map a whole-vertebra map needs). Whole vertebrae without bodies are refused:
    nothing geometric is measurable on them (the page would show an empty table)."""
    label_map = imageio.on_reference_grid(imageio.read_image(path), path, image)  # a .seg.nrrd Slicer saved cropped
    if not imageio.same_grid(label_map, image):
        raise InputError(
            f"{Path(path).name}: the label map's grid ({imageio.describe_grid(label_map)}) differs from the image's "
            f"({imageio.describe_grid(image)}); resample it onto the image first"
        )
    body_map = imageio.read_image(bodies) if bodies else None
    translation = label_schemes.translate(label_map, label_scheme, body_map)
    if not translation.bodies:
        raise InputError(f"{Path(path).name} (read as {translation.scheme}): {label_schemes.NEEDS_BODIES}")
    return translation


class VoxelOrder:
    """Between the voxel order of Slicer's volume node and that of the library's SimpleITK image.

    Both place every voxel at the same RAS position, but Slicer's reader stores a left-handed grid (e.g. a
    NIfTI whose axes form a left-handed system) with one axis reversed. Arrays are (k, j, i), as
    ``sitk.GetArrayFromImage`` and :func:`array_of_volume` give them.
    """

    def __init__(self, node, image: sitk.Image):
        image_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ imageio.index_to_lps_matrix(image)
        mapping = np.linalg.inv(image_ras) @ ijk_to_ras(node)  # node (i, j, k) -> image (i, j, k)
        signed = np.round(mapping[:3, :3])
        if not np.allclose(mapping[:3, :3], signed, atol=1e-4) or sorted(np.abs(signed).sum(axis=0)) != [1, 1, 1]:
            raise InputError("Slicer placed this image's voxels differently from SimpleITK (not a flip or axis order); cannot review it")
        self.axes = [int(np.argmax(np.abs(signed[a]))) for a in range(3)]  # image axis a <- node axis axes[a]
        self.flips = [bool(signed[a, self.axes[a]] < 0) for a in range(3)]

    def to_image(self, node_array: np.ndarray) -> np.ndarray:
        ijk = np.transpose(node_array, (2, 1, 0))  # node (i, j, k)
        ijk = np.transpose(ijk, self.axes)
        for axis, flip in enumerate(self.flips):
            if flip:
                ijk = np.flip(ijk, axis)
        return np.ascontiguousarray(np.transpose(ijk, (2, 1, 0)))

    def to_node(self, image_array: np.ndarray) -> np.ndarray:
        ijk = np.transpose(image_array, (2, 1, 0))  # image (i, j, k)
        for axis, flip in enumerate(self.flips):
            if flip:
                ijk = np.flip(ijk, axis)
        ijk = np.transpose(ijk, np.argsort(self.axes))
        return np.ascontiguousarray(np.transpose(ijk, (2, 1, 0)))


class ReviewScene:
    """One case on a trame-slicer scene: the input volume and its segmentation."""

    def __init__(self, slicer_app):
        self.app = slicer_app
        self.scene = slicer_app.scene
        self.volume_node = None
        self.segmentation_node = None
        self.image: sitk.Image | None = None  # the input as the library sees it
        self.source_path: Path | None = None
        self.dicom_folder: Path | None = None
        self.order: VoxelOrder | None = None
        self.modality = ""  # "CT" or "MR" (how it was decided in modality_source)
        self.modality_source = ""
        self.translation: label_schemes.Translation | None = None  # how the loaded label map was read
        self._work: Path | None = None  # private temporary folder, made when a DICOM series is converted

    # -- loading -------------------------------------------------------------------------------------
    def load_image(self, path: str | os.PathLike, with_labels: bool = False, image: sitk.Image | None = None):
        """Load an MRI file or DICOM series folder; refuses unreadable files with one line, and a CT unless
        its segmentation comes with it (``with_labels``): the page segments MRI only. ``image``: that file
        already read by ``imageio.read_image`` when the caller has it."""
        path = Path(path)
        image = image if image is not None else imageio.read_image(path)  # InputError (one line) when unreadable
        kind, source = check_modality(image, path, with_labels)
        readable = path
        if path.is_dir():  # a DICOM series: Slicer's archetype reader wants one file, give it the series as NRRD
            if self._work is None:
                self._work = Path(tempfile.mkdtemp(prefix="spineanalysis-scene-"))
            readable = self._work / f"{path.name or 'series'}.nrrd"
            imageio.write_image(image, readable)
        name = imageio.strip_image_suffix(path.name) or "volume"
        node = self.app.volumes_logic.AddArchetypeVolume(str(readable), name, 0)
        if node is None:
            raise InputError(f"{path.name}: Slicer could not read this image")
        try:
            order = VoxelOrder(node, image)
        except InputError:
            self.scene.RemoveNode(node)
            raise
        self.clear()
        self.volume_node, self.image, self.source_path, self.order = node, image, path, order
        self.modality, self.modality_source = kind, source
        self.dicom_folder = path if path.is_dir() else None
        return node

    def clear(self) -> None:
        for node in (self.segmentation_node, self.volume_node):
            if node is not None and node.GetScene() is not None:
                self.scene.RemoveNode(node)
        self.volume_node = self.segmentation_node = None
        self.image = None
        self.modality = self.modality_source = ""
        self.translation = None

    @property
    def is_ct(self) -> bool:
        return self.modality == modality.CT

    def load_labels(self, path: str | os.PathLike, label_scheme: str = "auto", bodies: str | os.PathLike | None = None, translation=None):
        """Load a label map of the current image (any scheme, see :func:`read_labels`) as named, coloured
        segments; ``translation``: the result of :func:`read_labels` when the caller has it already."""
        if self.image is None:
            raise InputError("load an image before its labels")
        translation = translation or read_labels(path, self.image, label_scheme, bodies)
        node = self.import_labels(translation.label_map)
        self.translation = translation
        return node

    def import_labels(self, label_map: sitk.Image):
        """Replace the segmentation by the segments of ``label_map`` (scheme labels on the image grid)."""
        array = imageio.check_label_map(label_map, reference=self.image)
        self.translation = None
        present = sorted(int(v) for v in np.unique(array) if v)
        names = case_segment_names(present)
        colors = self.scene.AddNewNodeByClass("vtkMRMLColorTableNode", "__spineanalysis_labels__")
        label_node = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__spineanalysis_labels__")
        try:
            colors.SetTypeToUser()
            colors.SetNumberOfColors(max(present) + 1)
            colors.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
            for label in range(1, max(present) + 1):
                colors.SetColor(label, "", 0.0, 0.0, 0.0, 0.0)
            for label in present:
                colors.SetColor(label, names[label], *scheme.structure_color(label), 1.0)
            self._fill_like_volume(label_node, self.order.to_node(array))
            label_node.CreateDefaultDisplayNodes()
            label_node.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
            if self.segmentation_node is None:
                self.segmentation_node = self.app.segmentation_editor.create_empty_segmentation_node()
                self.segmentation_node.SetName(f"{self.volume_node.GetName()} segmentation")
            else:
                self.segmentation_node.GetSegmentation().RemoveAllSegments()
            self.segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(self.volume_node)
            if not self.app.segmentations_logic.ImportLabelmapToSegmentationNode(label_node, self.segmentation_node):
                raise InputError("the label map could not be imported into a segmentation")
        finally:
            self.scene.RemoveNode(label_node)
            self.scene.RemoveNode(colors)
        self.apply_scheme()  # exact colours (the colour table keeps 8 bits per channel) and terminology
        return self.segmentation_node

    def _fill_like_volume(self, node, array: np.ndarray) -> None:
        """Put ``array`` (k, j, i, in the volume node's voxel order) into ``node`` on exactly its voxel grid."""
        matrix = vtkMatrix4x4()
        self.volume_node.GetIJKToRASMatrix(matrix)
        node.SetIJKToRASMatrix(matrix)
        data = vtkImageData()
        data.SetDimensions(array.shape[::-1])
        data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array, dtype=np.uint16).ravel(), deep=True))
        node.SetAndObserveImageData(data)

    # -- segments ------------------------------------------------------------------------------------
    def segment_names(self) -> dict[str, str]:
        """Segment id -> name, in the segmentation's order."""
        if self.segmentation_node is None:
            return {}
        segmentation = self.segmentation_node.GetSegmentation()
        return {sid: segmentation.GetSegment(sid).GetName() for sid in segmentation.GetSegmentIDs()}

    def segment_labels(self) -> dict[str, int]:
        """Segment id -> scheme label, for the segments whose names belong to the scheme."""
        labels = {sid: label_of_name(name) for sid, name in self.segment_names().items()}
        return {sid: label for sid, label in labels.items() if label is not None}

    def segment_id(self, name: str) -> str | None:
        for sid, segment_name in self.segment_names().items():
            if segment_name == name:
                return sid
        return None

    def label_array(self) -> np.ndarray:
        """Scheme label values (from the segment names) on the input's voxel grid, as a (k, j, i) array."""
        labels = self.segment_labels()
        shape = tuple(self.image.GetSize())[::-1]
        if not labels:
            return np.zeros(shape, dtype=np.uint16)
        exported = segments_to_label_array(self.app.segmentations_logic, self.segmentation_node, labels, self.volume_node)
        array = self.order.to_image(exported)
        if array.shape != shape:
            raise InputError(f"the exported label map has shape {array.shape}, the image {shape}")
        return array

    def label_map(self) -> sitk.Image:
        return imageio.label_map_like(self.label_array(), self.image)

    def apply_scheme(self) -> None:
        """Give every segment whose name belongs to the scheme the scheme's colour and SNOMED CT terminology
        entry, as the Slicer module does (:func:`SpineAnalysisLib.segment_scheme.apply_scheme_to_segment`)."""
        segmentation = self.segmentation_node.GetSegmentation()
        for sid in self.segment_names():
            apply_scheme_to_segment(segmentation.GetSegment(sid))

    # -- measurements --------------------------------------------------------------------------------
    def measure(self, label_map: sitk.Image | None = None) -> list[Measurement]:
        """The current segmentation (or ``label_map``, our scheme: translated on loading) measured as
        ``spineanalysis measure`` does (CT-aware)."""
        return self.measure_with_landmarks(label_map)[0]

    def measure_with_landmarks(self, label_map: sitk.Image | None = None) -> tuple[list[Measurement], dict]:
        """:meth:`measure` and where each value was measured (landmarks.json's content, patient LPS mm), from the
        same measurement (``measure_segmentation`` runs ``measure_case_with_landmarks``: nothing is measured twice)."""
        label_map = label_map if label_map is not None else self.label_map()
        detected = (self.modality, self.modality_source) if self.modality else None  # found once, by load_image
        result = measure_segmentation(self.image, label_map, label_scheme="spineanalysis", detected=detected)
        return result.measurements, result.landmarks

    # -- relabelling ---------------------------------------------------------------------------------
    def relabel(self, mapping: dict[str, str]) -> dict[str, str]:
        """Rename vertebrae (discs follow); returns ``{old name: new name}``. ValueError changes nothing."""
        renames = plan_relabel(self.segment_names(), mapping)
        segmentation = self.segmentation_node.GetSegmentation()
        for sid, (_old, new) in renames.items():
            segmentation.GetSegment(sid).SetName(new)
        self.apply_scheme()
        return {old: new for old, new in renames.values()}

    def shift_levels(self, delta: int) -> dict[str, str]:
        return self.relabel(shift_mapping(self.segment_names().values(), delta))

    # -- navigation ----------------------------------------------------------------------------------
    def segment_center(self, name: str) -> tuple[float, float, float]:
        sid = self.segment_id(name)
        if sid is None:
            raise InputError(f"there is no segment called {name}")
        center = self.segmentation_node.GetSegmentCenterRAS(sid)
        if center is None:
            raise InputError(f"{name} is empty")
        return tuple(float(c) for c in center)

    def place_of(self, name: str) -> tuple[tuple[float, float, float], str]:
        """Where the table row ``name`` lies (RAS, mm) and the note when that is not its own segment
        (:func:`.navigation.where_to_look`): its segment's centre; for a level without a segment of its own - a
        disc the labels leave out ("L4-L5"), a whole-spine row's range ("L1-L5", "T12-S1") - the midpoint of
        the centres of the two vertebrae it spans; for a level not labelled (the sacral slope's "S1" on a map
        that ends at L5) the labelled structures it is about, or the nearest one. :class:`.navigation.NotLabelled`
        when nothing is labelled."""
        names, note = where_to_look(name, self.segment_names().values())
        centres = np.array([self.segment_center(n) for n in names])
        return tuple(float(c) for c in centres.mean(axis=0)), note

    def jump_to(self, name: str) -> tuple[tuple[float, float, float], str]:
        """Centre every slice view on the named level (:meth:`place_of`); returns that point (RAS, mm) and the
        note saying what is shown when the level itself is not labelled."""
        slicer = _slicer()
        (r, a, s), note = self.place_of(name)
        slicer.vtkMRMLSliceNode.JumpAllSlices(self.scene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
        return (r, a, s), note

    # -- export --------------------------------------------------------------------------------------
    def write_seg_nrrd(self, path: str | os.PathLike) -> Path:
        """The segmentation as .seg.nrrd (names and colours kept), as Slicer saves it."""
        slicer = _slicer()
        storage = slicer.vtkMRMLSegmentationStorageNode()  # Slicer's own writer (Segment<i>_Name/_Color/... keys)
        storage.SetFileName(str(path))
        if not storage.WriteData(self.segmentation_node):
            raise InputError(f"the segmentation could not be written to {Path(path).name}")
        return Path(path)

    def write_dicom_seg(self, path: str | os.PathLike) -> Path:
        """A DICOM SEG referencing the input series (only when the input was a DICOM folder)."""
        if self.dicom_folder is None:
            raise InputError("DICOM SEG needs a DICOM input series; this image was not loaded from DICOM")
        from ..dicomseg import write_dicom_seg

        label_map = self.label_map()
        present = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(label_map)) if v]
        return write_dicom_seg(label_map, self.dicom_folder, path, names=case_segment_names(present))

    def close(self) -> None:
        import shutil

        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None
