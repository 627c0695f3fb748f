"""DICOM Segmentation (SEG) objects of a SpineAnalysis label map, written and read with highdicom.

One segment per structure: SegmentLabel is the level's name ("L4", "L4-L5", "L5-L6"), the category is
SCT 123037004 "Anatomical Structure" and the type the structure's SNOMED CT code from
:mod:`SpineAnalysisLib.labels` (per-level codes of DICOM CID 7603/7604 where they exist). The algorithm
type is AUTOMATIC for model output, SEMIAUTOMATIC for model output an annotator edited, MANUAL without a
model; the model's name and version are the algorithm identification. The SEG references the source
DICOM series (same study, frame of reference and per-frame source instances) and is of type BINARY,
which every DICOM SEG reader supports.

Reading maps the segments back to scheme labels by their names (then by unambiguous codes) and puts the
frames onto the grid of a reference image: exactly when the frames lie on that grid, otherwise by
nearest-neighbour resampling.

Needs ``highdicom`` (optional dependency ``spineanalysis[dicom]``, ``pip install highdicom==0.28.2``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from . import __version__
from . import imageio
from . import labels as scheme
from .annotation import split_model_text
from .errors import InputError
from .terminology import CATEGORY

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
#: Attributes every source instance needs so that a SEG can reference it.
REQUIRED_SOURCE_ATTRIBUTES = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
)  # fmt: skip
#: Largest distance (in voxels) between a SEG frame and the reference grid still placed without resampling.
POSITION_TOLERANCE = 0.01


def _highdicom():
    try:
        import highdicom
        import pydicom  # noqa: F401
    except ImportError:
        raise InputError("DICOM SEG needs the highdicom package: pip install highdicom==0.28.2 (or spineanalysis[dicom])") from None
    return highdicom


def source_instances(folder: str | os.PathLike, fill_missing_uids: bool = False) -> tuple[list[Path], list[Any]]:
    """The files of the single DICOM series in ``folder`` in slice order (as SimpleITK reads them) and their
    headers (pixel data not loaded). Raises :class:`InputError` for no/mixed series or missing attributes.

    ``fill_missing_uids``: an anonymised series whose files all lack StudyInstanceUID/SeriesInstanceUID gets
    UIDs derived from its frame of reference (the same every time), so that a SEG can still be built.
    """
    import pydicom
    from pydicom.uid import generate_uid

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; DICOM SEG needs the source DICOM series folder")
    files = [Path(f) for f in imageio._dicom_series(folder)]
    datasets = []
    for path in files:
        try:
            datasets.append(pydicom.dcmread(str(path), stop_before_pixels=True))
        except Exception as error:  # noqa: BLE001 - pydicom raises many types
            raise InputError(f"{path}: not a readable DICOM file ({type(error).__name__})") from None
    for path, dataset in zip(files, datasets):
        meta = getattr(dataset, "file_meta", None)
        # anonymised files sometimes keep the SOP class/instance UIDs only in the file meta information
        for name, meta_name in (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not str(dataset.get(name, "") or "").strip() and meta is not None and str(meta.get(meta_name, "") or "").strip():
                setattr(dataset, name, meta.get(meta_name))
    for name in ("StudyInstanceUID", "SeriesInstanceUID"):
        empty = [not str(d.get(name, "") or "").strip() for d in datasets]
        if fill_missing_uids and all(empty):
            seed = str(datasets[0].get("FrameOfReferenceUID", "") or datasets[0].get("SOPInstanceUID", "") or folder.resolve())
            value = generate_uid(entropy_srcs=["SpineAnalysis", name, seed])
            for dataset in datasets:
                setattr(dataset, name, value)
    for path, dataset in zip(files, datasets):
        missing = [name for name in REQUIRED_SOURCE_ATTRIBUTES if dataset.get(name) is None or str(dataset.get(name)).strip() in ("", "[]")]
        if missing and set(missing) <= {"StudyInstanceUID", "SeriesInstanceUID"}:
            raise InputError(
                f"{path}: has no {' or '.join(missing)} (an anonymised series?); a DICOM SEG must reference them "
                "(use --fill-missing-uids / fill_missing_uids=True to derive stand-in UIDs)"
            )
        if missing:
            raise InputError(f"{path}: lacks {', '.join(missing)}; a DICOM SEG cannot reference this series")
        if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
            raise InputError(f"{path}: multi-frame (enhanced) DICOM sources are not supported; use a single-frame series")
    return files, datasets


def _display_color(rgb):
    from highdicom.color import CIELabColor

    return CIELabColor.from_rgb(*(int(round(255 * c)) for c in rgb))


def _model_fields(model: Any) -> tuple[str, str] | None:
    if model is None or model == "":
        return None
    if isinstance(model, dict):
        return str(model.get("name") or "model"), str(model.get("version") or "unknown")
    if isinstance(model, str):
        name, version = split_model_text(model)
        return name, "unknown" if version is None else version
    return str(getattr(model, "name", "model")), str(getattr(model, "version", "unknown"))


def write_dicom_seg(
    label_map: sitk.Image,
    source_dicom_folder: str | os.PathLike,
    path: str | os.PathLike,
    names: dict[int, str] | None = None,
    model: Any = None,
    edited: set[str] | list[str] | bool | None = None,
    series_description: str = "SpineAnalysis vertebrae and discs",
    series_number: int = 901,
    content_creator: str | None = None,
    fill_missing_uids: bool = False,
) -> Path:
    """Write ``label_map`` (on the grid of the DICOM series in ``source_dicom_folder``) as a DICOM SEG.

    ``names`` overrides a label's segment name (e.g. "L5-L6"). ``model`` (``ModelInfo``, dict or
    "name version") produced the segmentation; ``edited`` lists the structure names an annotator changed
    (True: all of them). ``fill_missing_uids``: see :func:`source_instances`. The file is written to a
    temporary name and renamed.
    """
    hd = _highdicom()
    from pydicom.sr.codedict import codes
    from highdicom.sr.coding import CodedConcept

    from .annotation import case_segment_names

    files, datasets = source_instances(source_dicom_folder, fill_missing_uids)
    reference = imageio.read_image(source_dicom_folder)
    if label_map is None:
        raise InputError("there is no segmentation to export")
    array = imageio.check_label_map(label_map, reference, what="label map")
    if array.shape[0] != len(datasets):
        raise InputError(f"the series has {len(datasets)} files but the image {array.shape[0]} slices; it cannot be referenced frame by frame")
    present = [int(v) for v in np.unique(array) if v]
    ordered = sorted(present, key=lambda v: (0, scheme.anatomical_rank(v)) if (scheme.is_vertebra(v) or scheme.is_disc(v)) else (1, v))
    segment_names = case_segment_names(present)
    segment_names.update({int(k): str(v) for k, v in (names or {}).items() if int(k) in present})
    model_fields = _model_fields(model)
    edited_names = set() if edited in (None, False) else set(segment_names.values()) if edited is True else set(edited)

    lookup = np.zeros(max(present) + 1, np.uint16)
    descriptions = []
    for number, label in enumerate(ordered, start=1):
        lookup[label] = number
        name = segment_names[label]
        try:
            structure = scheme.structure_for_name(name)
        except ValueError:
            structure = scheme.structure(label)
        if model_fields is None:
            algorithm_type, identification = hd.seg.SegmentAlgorithmTypeValues.MANUAL, None
        else:
            algorithm_type = hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC if name in edited_names else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
            identification = hd.AlgorithmIdentificationSequence(
                name=model_fields[0], family=codes.cid7162.ArtificialIntelligence, version=model_fields[1]
            )
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name,
                segmented_property_category=CodedConcept(value=CATEGORY[1], scheme_designator=CATEGORY[0], meaning=CATEGORY[2]),
                segmented_property_type=CodedConcept(structure.snomed_code, "SCT", structure.snomed_meaning),
                algorithm_type=algorithm_type,
                algorithm_identification=identification,
                tracking_uid=hd.UID(),
                tracking_id=name,
                display_color=_display_color(structure.color),
            )
        )
    pixel_array = lookup[array].astype(np.uint8 if len(ordered) < 256 else np.uint16)
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=pixel_array,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="SpineAnalysis",
            manufacturer_model_name="SpineAnalysis",
            software_versions=f"SpineAnalysis {__version__}",
            device_serial_number="none",
            content_label="SPINE",
            content_description=series_description[:64],
            content_creator_name=content_creator,
            omit_empty_frames=True,
        )
    except (ValueError, TypeError, AttributeError) as error:
        raise InputError(f"{source_dicom_folder}: highdicom could not build the SEG ({str(error).splitlines()[0][:300]})") from None
    seg.SeriesDescription = series_description[:64]

    return imageio.write_atomically(path, seg.save_as, suffix=".tmp")


def _segment_labels(seg, unknown: str) -> dict[int, tuple[int, str]]:
    """Segment number -> (scheme label, name) from SegmentLabel, then from an unambiguous type code."""
    by_code: dict[str, list[int]] = {}
    for label in scheme.all_labels():
        by_code.setdefault(scheme.structure(label).snomed_code, []).append(label)
    result = {}
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        name = str(getattr(item, "SegmentLabel", "") or "")
        label = None
        try:
            label = scheme.label_from_name(name)
        except ValueError:
            codes = getattr(item, "SegmentedPropertyTypeCodeSequence", [])
            if codes and codes[0].CodingSchemeDesignator in ("SCT", "SRT"):
                candidates = by_code.get(str(codes[0].CodeValue), [])
                if len(candidates) == 1:
                    label = candidates[0]
                    name = scheme.structure_name(label)
        if label is None:
            if unknown == "skip":
                continue
            raise InputError(f"segment {number} {name!r} is not a structure of the SpineAnalysis label scheme")
        result[number] = (label, name)
    return result


def _frame_attribute(seg, index: int, sequence: str, attribute: str):
    frame = seg.PerFrameFunctionalGroupsSequence[index]
    if sequence in frame:
        return getattr(getattr(frame, sequence)[0], attribute)
    shared = seg.SharedFunctionalGroupsSequence[0]
    return getattr(getattr(shared, sequence)[0], attribute)


def read_dicom_seg(path: str | os.PathLike, reference, unknown: str = "error") -> tuple[sitk.Image, dict[int, str]]:
    """Read a DICOM SEG onto the grid of ``reference`` (an image, an image file or a DICOM series folder).

    Returns ``(label_map, names)``: a UInt16 label map of scheme labels and each label's segment name.
    ``unknown="skip"`` ignores segments that are not in the scheme (default: :class:`InputError`).
    """
    hd = _highdicom()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    reference = reference if isinstance(reference, sitk.Image) else imageio.read_image(reference)
    try:
        seg = hd.seg.segread(str(path))
    except Exception as error:  # noqa: BLE001
        raise InputError(f"{path}: not a readable DICOM SEG ({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''})") from None
    segments = _segment_labels(seg, unknown)
    names = {label: name for label, name in segments.values()}
    shape = tuple(reversed(reference.GetSize()))  # (z, y, x)
    result = np.zeros(shape, np.uint16)
    if not segments:
        return imageio.label_map_like(result, reference), names
    frames = seg.pixel_array
    frames = frames.reshape(-1, int(seg.Rows), int(seg.Columns))
    if str(getattr(seg, "SegmentationType", "BINARY")) == "FRACTIONAL":
        frames = frames >= (int(getattr(seg, "MaximumFractionalValue", 255)) / 2)
    direction = np.asarray(reference.GetDirection(), float).reshape(3, 3)
    spacing = np.asarray(reference.GetSpacing(), float)
    origin = np.asarray(reference.GetOrigin(), float)
    placed = []
    for index in range(frames.shape[0]):
        number = int(_frame_attribute(seg, index, "SegmentIdentificationSequence", "ReferencedSegmentNumber"))
        if number not in segments:
            continue
        orientation = np.asarray(_frame_attribute(seg, index, "PlaneOrientationSequence", "ImageOrientationPatient"), float)
        pixel_spacing = np.asarray(_frame_attribute(seg, index, "PixelMeasuresSequence", "PixelSpacing"), float)
        position = np.asarray(_frame_attribute(seg, index, "PlanePositionSequence", "ImagePositionPatient"), float)
        continuous = np.linalg.solve(direction, position - origin) / spacing
        on_grid = (
            np.allclose(orientation[:3], direction[:, 0], atol=1e-4)
            and np.allclose(orientation[3:], direction[:, 1], atol=1e-4)
            and np.allclose(pixel_spacing, (spacing[1], spacing[0]), rtol=1e-4)
            and (int(seg.Rows), int(seg.Columns)) == shape[1:]
            and np.allclose(continuous[:2], 0, atol=POSITION_TOLERANCE)
            and abs(continuous[2] - round(continuous[2])) < POSITION_TOLERANCE
            and 0 <= round(continuous[2]) < shape[0]
        )
        if not on_grid:
            return _read_by_resampling(seg, reference, segments), names
        placed.append((int(round(continuous[2])), index, segments[number][0]))
    for k, index, label in placed:
        result[k][frames[index] > 0] = label
    return imageio.label_map_like(result, reference), names


def _read_by_resampling(seg, reference: sitk.Image, segments: dict[int, tuple[int, str]]) -> sitk.Image:
    """Frames not on the reference grid: build the SEG's own volume, then nearest-neighbour resample."""
    try:
        volume = seg.get_volume(combine_segments=True, relabel=False, segment_numbers=sorted(segments), skip_overlap_checks=True)
    except (ValueError, RuntimeError) as error:
        raise InputError(f"the SEG frames do not form a regular volume, so they cannot be mapped onto the reference ({str(error).splitlines()[0][:200]})") from None
    array = np.asarray(volume.array)  # (slice, row, column)
    affine = np.asarray(volume.affine, float)
    lookup = np.zeros(max(max(segments), int(array.max(initial=0))) + 1, np.uint16)
    for number, (label, _name) in segments.items():
        lookup[number] = label
    image = sitk.GetImageFromArray(lookup[array.astype(np.int64)])  # numpy (slice, row, column) = ITK (z, y, x)
    columns = [affine[:3, 2], affine[:3, 1], affine[:3, 0]]  # ITK x = column, y = row, z = slice
    spacing = [float(np.linalg.norm(c)) for c in columns]
    image.SetSpacing(spacing)
    image.SetOrigin(tuple(float(v) for v in affine[:3, 3]))
    image.SetDirection(tuple(float(v) for v in np.column_stack([c / s for c, s in zip(columns, spacing)]).ravel()))
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    return resampled
