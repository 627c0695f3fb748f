"""Which kind of scanner made an image: CT (Hounsfield units) or MR.

From the DICOM Modality tag (0008,0060) when the image was read from DICOM, otherwise from the value range:
CT voxels are Hounsfield units, where air is -1000 and fat about -100, whereas MR magnitude images are not
negative. :func:`mri_only` tells the parameters that are MR signal measures or are compared with MRI norms,
and are therefore not reported on CT.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

CT, MR, UNKNOWN = "CT", "MR", "unknown"

NOT_ON_CT = "not measured on CT: MR signal parameter or z-score against an MRI reference"


def mri_only(parameter: str) -> bool:
    """True for a disc parameter withheld on CT: ΔSI, anything Pfirrmann (a T2 signal grading) and every z-score
    (the references are MRI populations), by name so that parameters added later are covered too."""
    return parameter.startswith(("delta_si", "pfirrmann")) or parameter.endswith("_z")


def _sample(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    sample = flat[:: max(1, flat.size // 1_000_000)].astype(np.float32, copy=False)
    return sample[np.isfinite(sample)]


def looks_like_ct(image: sitk.Image, array: np.ndarray | None = None) -> bool:
    """True for a Hounsfield-scaled volume (see :func:`detect`)."""
    return detect(image, array)[0] == CT


def detect(image: sitk.Image, array: np.ndarray | None = None) -> tuple[str, str]:
    """(modality, how it was decided): ``CT``, ``MR`` or ``unknown``.

    Value rule (no DICOM tag): CT when the darkest voxels reach -900 or lower and over 5 % of the voxels are
    below -500 (air around the body), or when 1 % or more of the voxels are at -100 or lower (fat and air of
    a tight crop: MR magnitudes are not negative). MR when no voxel is below 0.
    """
    if image.HasMetaDataKey("0008|0060"):
        tag = image.GetMetaData("0008|0060").strip().upper()
        if tag in (CT, MR):
            return tag, f"DICOM Modality tag {tag}"
    if array is None:
        array = sitk.GetArrayViewFromImage(image)
    sample = _sample(np.asarray(array))
    if sample.size == 0:
        return UNKNOWN, "no finite voxel"
    if sample.min() <= -900 and np.mean(sample < -500) > 0.05:
        return CT, "value range: air at about -1000 (Hounsfield units)"
    if np.mean(sample <= -100) >= 0.01:
        return CT, "value range: 1 % or more of the voxels at -100 or lower (Hounsfield units of fat and air)"
    if sample.min() >= 0:
        return MR, "value range: no negative voxel (MR magnitude image)"
    return UNKNOWN, "value range fits neither CT (Hounsfield units) nor an MR magnitude image"
