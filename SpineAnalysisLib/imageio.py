"""Reading and writing images and label maps with their patient-space geometry kept exactly.

Everything is a SimpleITK image (LPS world coordinates, millimetres). Accepted inputs: NIfTI
(.nii, .nii.gz), NRRD (.nrrd, .nhdr, .seg.nrrd), MetaImage (.mha, .mhd) and a folder holding one
DICOM series. Files are written atomically: to a temporary name in the target folder, then renamed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from . import labels as scheme
from .errors import InputError
from .filecheck import check_file_data

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
#: Largest allowed difference between two grids, relative to the voxel size.
GRID_TOLERANCE = 1e-3
#: DICOM identifiers :func:`read_dicom_series` keeps on the image (name -> tag).
DICOM_IDENTIFIER_TAGS = {"PatientID": "0010|0020", "StudyInstanceUID": "0020|000d", "SeriesInstanceUID": "0020|000e", "Modality": "0008|0060"}


def has_image_suffix(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(IMAGE_SUFFIXES)


def strip_image_suffix(name: str) -> str:
    """``name`` without its image, segmentation or DICOM file suffix ("a.seg.nrrd" -> "a", "b.nii.gz" -> "b")."""
    lower = name.lower()
    for suffix in sorted((".seg.nrrd",) + IMAGE_SUFFIXES + DICOM_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _dicom_series(folder: Path) -> list[str]:
    reader = sitk.ImageSeriesReader
    # GDCM warns "No Series were found" on the process's stderr by itself; the InputError below says it in one line
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        series_ids = reader.GetGDCMSeriesIDs(str(folder))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
    if not series_ids:
        images = sorted(entry.name for entry in folder.iterdir() if entry.is_file() and has_image_suffix(entry.name))
        hint = f" (it holds image files: {', '.join(images[:3])}{' ...' if len(images) > 3 else ''}; give one of them as IMAGE)" if images else ""
        raise InputError(f"{folder}: no DICOM series found in this folder{hint}")
    if len(series_ids) > 1:
        raise InputError(
            f"{folder}: holds {len(series_ids)} DICOM series ({', '.join(series_ids[:3])}...); "
            "point to a folder with exactly one series"
        )
    return list(reader.GetGDCMSeriesFileNames(str(folder), series_ids[0]))


def read_dicom_series(folder: str | os.PathLike) -> sitk.Image:
    """Read the single DICOM series in ``folder`` (slices sorted by position by GDCM)."""
    files = _dicom_series(Path(folder))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(f"{folder}: the DICOM series could not be read ({_first_line(error)})") from None
    for key in DICOM_IDENTIFIER_TAGS.values():
        if reader.HasMetaDataKey(0, key):
            image.SetMetaData(key, reader.GetMetaData(0, key).strip())
    return image


def dicom_identifiers(image: sitk.Image | None) -> dict[str, str]:
    """PatientID, StudyInstanceUID, SeriesInstanceUID and Modality of an image read from DICOM ("" when absent)."""
    result = {}
    for name, tag in DICOM_IDENTIFIER_TAGS.items():
        result[name] = image.GetMetaData(tag).strip() if image is not None and image.HasMetaDataKey(tag) else ""
    return result


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # ITK puts the useful sentence last ("Description: ...")
    for line in reversed(lines):
        if line.startswith("Description:"):
            return line.removeprefix("Description:").strip()
    return lines[-1] if lines else type(error).__name__


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read a 3D image from a file or a DICOM series folder.

    Raises :class:`InputError` with a one-line reason when the path is missing, unreadable or not 3D.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        image = read_dicom_series(path)
    else:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: is an empty file (0 bytes)")
        check_file_data(path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise InputError(f"{path}: not a readable image ({_first_line(error)})") from None
        if _is_segmentation_file(path):
            from . import segfile

            image = segfile.to_scheme_labels(image, str(path)) or image  # levels from the segment names
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; a scalar image is needed")
    if image.GetDimension() != 3:
        raise InputError(f"{path}: is a {image.GetDimension()}D image; a 3D volume is needed")
    if min(image.GetSize()) < 1:
        raise InputError(f"{path}: is empty")
    if image.GetSize()[0] * image.GetSize()[1] * image.GetSize()[2] > 0 and sorted(image.GetSize())[1] == 1:
        raise InputError(f"{path}: has size {image.GetSize()}, which is not a 3D volume (a single line of voxels)")
    return image


#: At most this many distinct values, all of them labels of the scheme: a label map or mask, not a scan.
#: Every MR image of ../shared/data/lumbar_mri (8-bit ones included) has at least 234 distinct grey values.
LABEL_MAP_MAX_VALUES = 64


def check_scan(image: sitk.Image, what: str = "image") -> None:
    """Raise :class:`InputError` when ``image`` is a label map (or a mask, or blank) rather than a scan.

    The rule: the voxels are whole numbers, there are at most :data:`LABEL_MAP_MAX_VALUES` distinct values,
    and every non-zero value is a label of the SpineAnalysis scheme. A scan has hundreds of grey values,
    so it cannot pass all three; a label map or a 0/1 mask passes all of them. Cheap: min/max first, and a
    histogram only when every value lies in the scheme's range.
    """
    array = sitk.GetArrayViewFromImage(image)
    low, high = array.min(), array.max()
    if low == high:
        raise InputError(f"{what}: every voxel has the same value ({low}); this is not a scan")
    if low < 0 or high > max(scheme.all_labels()):
        return
    if np.issubdtype(array.dtype, np.floating):
        if not np.array_equal(array, np.round(array)):
            return
    flat = array.ravel()
    counts = np.bincount(flat if np.can_cast(flat.dtype, np.intp) else flat.astype(np.intp))
    values = [int(v) for v in np.flatnonzero(counts)]
    if len(values) <= LABEL_MAP_MAX_VALUES and all(scheme.is_known(v) for v in values if v):
        shown = ", ".join(map(str, values[:8])) + (" ..." if len(values) > 8 else "")
        raise InputError(
            f"{what}: looks like a label map or mask, not a scan ({len(values)} distinct values, all labels of the scheme: {shown}); "
            "give the MR image as IMAGE (a label map goes to 'measure IMAGE LABELS')"
        )


def read_scan(path: str | os.PathLike) -> sitk.Image:
    """Read the image to analyse (:func:`read_image`) and refuse a label map given in its place (:func:`check_scan`)."""
    image = read_image(path)
    check_scan(image, str(path))
    return image


def check_finite(image: sitk.Image, what: str = "image") -> None:
    """Raise :class:`InputError` when ``image`` holds NaN or infinite voxels."""
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        count = int((~np.isfinite(array)).sum())
        raise InputError(f"{what}: {count} voxels are NaN or infinite")


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """True when ``a`` and ``b`` have the same size, spacing, origin and direction."""
    if a.GetSize() != b.GetSize():
        return False
    spacing = np.asarray(a.GetSpacing())
    if not np.allclose(spacing, b.GetSpacing(), rtol=GRID_TOLERANCE, atol=0):
        return False
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), atol=GRID_TOLERANCE * spacing.min()):
        return False
    return np.allclose(a.GetDirection(), b.GetDirection(), atol=GRID_TOLERANCE)


def describe_grid(image: sitk.Image) -> str:
    spacing = "x".join(f"{s:.3g}" for s in image.GetSpacing())
    return f"size {'x'.join(map(str, image.GetSize()))}, spacing {spacing} mm, origin {tuple(round(o, 2) for o in image.GetOrigin())}"


def check_label_map(label_map: sitk.Image, reference: sitk.Image | None = None, what: str = "label map") -> np.ndarray:
    """Validate a label map and return its voxels as an int array (z, y, x).

    Checks: integer values, every value in the label scheme, not empty, and (when ``reference``
    is given) the same grid as the image.
    """
    if reference is not None and not same_grid(label_map, reference):
        raise InputError(
            f"{what} and image are on different grids ({describe_grid(label_map)} vs {describe_grid(reference)}); "
            "resample the label map onto the image first"
        )
    array = sitk.GetArrayFromImage(label_map)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError(f"{what}: holds NaN or infinite values")
        if not np.array_equal(array, np.round(array)):
            raise InputError(f"{what}: holds non-integer values; is it a probability map or an image?")
    array = array.astype(np.int64)
    values = np.unique(array)
    values = values[values != 0]
    if values.size == 0:
        raise InputError(f"{what}: is empty (no labelled voxel)")
    unknown = [int(v) for v in values if not scheme.is_known(int(v))]
    if unknown:
        shown = ", ".join(map(str, unknown[:8])) + (" ..." if len(unknown) > 8 else "")
        raise InputError(
            f"{what}: labels {shown} are outside the SpineAnalysis scheme "
            "(vertebrae 1-28 VerSe ids, discs 100 + vertebra above, 60 cord, 61 canal)"
        )
    return array.astype(np.uint16)


def _is_segmentation_file(path: Path) -> bool:
    return path.name.lower().endswith(".seg.nrrd")


def on_reference_grid(label_map: sitk.Image, path: str | os.PathLike, reference: sitk.Image | None) -> sitk.Image:
    """A Slicer ``.seg.nrrd`` saved cropped to its segments' extent, put back onto ``reference``'s grid when it lies on
    it (:func:`.segfile.onto_grid`); any other label map unchanged (a grid mismatch is the caller's to refuse)."""
    if reference is None or not _is_segmentation_file(Path(path)) or same_grid(label_map, reference):
        return label_map
    from . import segfile

    return segfile.onto_grid(label_map, reference) or label_map


def read_label_map(path: str | os.PathLike, reference: sitk.Image | None = None) -> sitk.Image:
    """Read and validate a label map (see :func:`check_label_map`); returned as UInt16."""
    image = on_reference_grid(read_image(path), path, reference)
    array = check_label_map(image, reference, what=str(path))
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    return result


def label_map_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A UInt16 label map holding ``array`` (z, y, x) on exactly the grid of ``reference``."""
    if tuple(array.shape[::-1]) != tuple(reference.GetSize()):
        raise ValueError(f"array shape {array.shape} does not match image size {reference.GetSize()}")
    result = sitk.GetImageFromArray(np.asarray(array, dtype=np.uint16))
    result.CopyInformation(reference)
    return result


def default_mode(directory: bool = False) -> int:
    """The mode a plain ``open()`` (or ``mkdir()``) would give; mkstemp's 0600 and mkdtemp's 0700 would hide
    outputs from other users on shared filesystems."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def write_atomically(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> Path:
    """Call ``write(temporary_path)`` on a temporary file beside ``path``, then rename it to ``path``.

    Readers never see a half-written file, and a failure leaves the previous file untouched and no
    temporary behind. The file gets the mode a plain ``open()`` would give.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, default_mode())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``image`` atomically (temporary file in the same folder, then rename). A label map written as
    ``.seg.nrrd`` carries Slicer's segment fields, so Slicer shows L1, L4-L5 ... rather than Segment_20."""
    name = str(path)
    if name.lower().endswith(".seg.nrrd") and image.GetPixelID() in _INTEGER_PIXELS:
        image = _with_segment_fields(image)
    if name.lower().endswith((".mhd", ".nhdr")):
        return _write_with_data_file(image, Path(path), compress)
    suffix = ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix
    return write_atomically(path, lambda temporary: sitk.WriteImage(image, temporary, compress), suffix)


_INTEGER_PIXELS = (sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32, sitk.sitkInt32, sitk.sitkUInt64, sitk.sitkInt64)


def _with_segment_fields(label_map: sitk.Image) -> sitk.Image:
    """A copy of ``label_map`` with the header fields of a Slicer segmentation file, one segment per label of the
    scheme present (name, colour, label value, extent and the SNOMED CT terminology entry of
    :mod:`.terminology`), as ``vtkMRMLSegmentationStorageNode`` writes and reads them
    (https://slicer.readthedocs.io/en/latest/developer_guide/modules/segmentations.html#segmentation-labelmap-representation-file-format)."""
    from . import terminology

    array = sitk.GetArrayViewFromImage(label_map)
    result = sitk.Image(label_map)
    for key in result.GetMetaDataKeys():  # fields of a segmentation read earlier would describe other segments
        if key.startswith("Segment"):
            result.EraseMetaData(key)
    present = sorted((int(v) for v in np.unique(array) if v and scheme.is_known(int(v))), key=scheme.anatomical_rank)
    result.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    result.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    result.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    for index, label in enumerate(present):
        k, j, i = np.nonzero(array == label)
        name = scheme.structure_name(label)
        fields = {"ID": name, "Name": name, "NameAutoGenerated": "0", "Color": " ".join(f"{c:.6g}" for c in scheme.structure_color(label)),
                  "ColorAutoGenerated": "0", "LabelValue": str(label), "Layer": "0",
                  "Extent": f"{i.min()} {i.max()} {j.min()} {j.max()} {k.min()} {k.max()}",
                  "Tags": f"TerminologyEntry:{terminology.serialized_entry(label)}|"}
        for key, value in fields.items():
            result.SetMetaData(f"Segment{index}_{key}", value)
    return result


def _write_with_data_file(image: sitk.Image, path: Path, compress: bool) -> Path:
    """A header + data file pair (.mhd + .raw/.zraw, .nhdr + .raw.gz): written under the final names in a
    temporary folder beside ``path`` (the header names its data file), then moved, the header last."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        sitk.WriteImage(image, str(staging / path.name), compress)
        for written in sorted(staging.iterdir(), key=lambda p: p.name == path.name):
            os.chmod(written, default_mode())
            os.replace(written, path.parent / written.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a UTF-8 text file atomically."""

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)

    return write_atomically(path, write)


def index_to_lps_matrix(image: sitk.Image) -> np.ndarray:
    """4x4 matrix mapping (i, j, k, 1) voxel indices to LPS millimetres."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def lps_to_ras(points: np.ndarray) -> np.ndarray:
    """LPS (ITK, DICOM) to RAS (Slicer, NIfTI) coordinates: flip the first two axes."""
    points = np.array(points, dtype=float)
    points[..., :2] *= -1
    return points
