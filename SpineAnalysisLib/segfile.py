"""A 3D Slicer segmentation file (``.seg.nrrd``) read as a label map of the SpineAnalysis scheme.

Slicer stores each segment as a value (``Segment<i>_LabelValue``) in one of the file's layers
(``Segment<i>_Layer``) and names it in ``Segment<i>_Name``. The values are Slicer's own: a segment the annotator
adds in the Segment Editor gets the lowest free value of its layer (1 for a disc added to a SpineAnalysis
segmentation, which read as it stands is C1), overlapping segments go to further layers (a 4D file), and the file
is cropped to the segments' extent. So the level is taken from the segment's *name*, and a cropped file is put
back onto the image's grid. File format: https://slicer.readthedocs.io/en/latest/developer_guide/modules/segmentations.html
"""

from __future__ import annotations

import re

import numpy as np
import SimpleITK as sitk

from . import labels as scheme
from .errors import InputError

_FIELD = re.compile(r"Segment(\d+)_(Name|LabelValue|Layer)$")
_DEFAULT_NAME = re.compile(r"(?:Segment|Label)[_ ]?(\d+)")
#: Largest distance (in voxels) between a cropped file's voxels and the image grid still taken as the same grid.
GRID_TOLERANCE = 1e-3


def segments(image: sitk.Image) -> list[tuple[str, int, int]]:
    """(name, label value, layer) of every segment the header describes, in segment order; [] for a plain NRRD."""
    fields: dict[int, dict[str, str]] = {}
    for key in image.GetMetaDataKeys():
        match = _FIELD.match(key)
        if match:
            fields.setdefault(int(match.group(1)), {})[match.group(2)] = image.GetMetaData(key).strip()
    result = []
    for index in sorted(fields):
        field = fields[index]
        try:
            result.append((field.get("Name", ""), int(field["LabelValue"]), int(field.get("Layer", "0") or 0)))
        except (KeyError, ValueError):
            continue  # a segment without a usable label value cannot be located
    return result


def scheme_label(name: str, value: int) -> int | None:
    """The scheme label a segment stands for: from its name ("L4", "L4-L5", "L5-L6"), or, for Slicer's default
    name of an imported value ("Segment_20", "Label_20"), that value when it is a scheme label."""
    try:
        return scheme.label_from_name(name)
    except ValueError:
        pass
    match = _DEFAULT_NAME.fullmatch(name.strip())
    if match and int(match.group(1)) == value and scheme.is_known(value):
        return value
    return None


def to_scheme_labels(image: sitk.Image, what: str) -> sitk.Image | None:
    """A UInt16 label map of the scheme from a segmentation file's voxels (layers as components), or None when the
    file names no segment of the scheme (another tool's numbering: its values are read as they are).

    Raises :class:`InputError` when some segments are levels and others are not named as any structure, or when two
    segments overlap (a label map holds one structure per voxel)."""
    found = segments(image)
    mapped = [(name, value, layer, scheme_label(name, value)) for name, value, layer in found]
    if not any(label is not None for *_, label in mapped):
        return None
    unnamed = [name or f"value {value}" for name, value, _layer, label in mapped if label is None]
    if unnamed:
        raise InputError(
            f"{what}: segment(s) {', '.join(repr(n) for n in unnamed[:4])} are not named as a structure of the scheme "
            "(L4, L4-L5, S1, ...); rename or delete them in Slicer and save again"
        )
    voxels = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() == 1:
        voxels = voxels[..., np.newaxis]
    result = np.zeros(voxels.shape[:3], np.uint16)
    owner = {}
    for name, value, layer, label in mapped:
        if layer >= voxels.shape[3]:
            raise InputError(f"{what}: segment {name!r} is in layer {layer}, but the file holds {voxels.shape[3]} layer(s)")
        mask = voxels[..., layer] == value
        taken = mask & (result != 0) & (result != label)
        if taken.any():
            other = owner.get(int(result[taken][0]), "another segment")
            raise InputError(f"{what}: segments {other!r} and {name!r} overlap in {int(taken.sum())} voxels; a label map holds one structure per voxel")
        result[mask] = label
        owner[label] = name
    labels = sitk.GetImageFromArray(result)
    labels.SetSpacing(image.GetSpacing())
    labels.SetOrigin(image.GetOrigin())
    labels.SetDirection(image.GetDirection())
    return labels


def onto_grid(labels: sitk.Image, reference: sitk.Image) -> sitk.Image | None:
    """``labels`` placed onto ``reference``'s grid when it lies on that grid, cropped (as Slicer saves a segmentation
    to its segments' extent); None when it is on another grid."""
    if not np.allclose(labels.GetSpacing(), reference.GetSpacing(), rtol=1e-5, atol=1e-6):
        return None
    if not np.allclose(labels.GetDirection(), reference.GetDirection(), atol=1e-5):
        return None
    start = np.asarray(reference.TransformPhysicalPointToContinuousIndex(labels.GetOrigin()))
    if np.abs(start - np.round(start)).max() > GRID_TOLERANCE:
        return None
    start = np.round(start).astype(int)
    if (start < 0).any() or (start + np.asarray(labels.GetSize()) > np.asarray(reference.GetSize())).any():
        return None
    result = np.zeros(reference.GetSize()[::-1], np.uint16)
    i, j, k = start
    size_i, size_j, size_k = labels.GetSize()
    result[k:k + size_k, j:j + size_j, i:i + size_i] = sitk.GetArrayFromImage(labels)
    placed = sitk.GetImageFromArray(result)
    placed.CopyInformation(reference)
    return placed
