"""Trabecular attenuation of a vertebral body on CT (``trabecular_hu``).

The median Hounsfield value of the body's trabecular core: the voxels whose centres lie at least
:data:`EROSION_MM` inside the body's outermost voxel layer (a Euclidean distance map in millimetres, so
anisotropic voxels are eroded by the same physical depth in every direction). 5 mm removes the cortical shell
and the endplates (about 1 mm of compact bone), the partial-volume blur of a clinical CT reconstruction
(1-3 mm) and about one voxel of segmentation boundary error, and keeps most of a lumbar body (about 30 x 40 x
45 mm). The median resists the remaining bright bits (osteophytes, sclerotic islands).

Screening hint for L1 only, from Pickhardt et al., "Opportunistic screening for osteoporosis using abdominal
computed tomography scans obtained for other indications", Ann Intern Med 2013;158:588-595: an L1 trabecular
attenuation of 160 HU or less was 90 % sensitive, and 110 HU or less more than 90 % specific, for osteoporosis
by DXA. It is a screening hint, not a diagnosis: values depend on the scanner, tube voltage and contrast phase
and were validated against DXA only in that study's population.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .. import labels as scheme

EROSION_MM = 5.0
#: A core smaller than this (mm^3) is too small to stand for the body (cut by the field of view, thin slab).
MIN_CORE_MM3 = 1000.0
PICKHARDT_SPECIFIC_HU = 110.0
PICKHARDT_SENSITIVE_HU = 160.0
L1 = 20
PARAMETER = ("trabecular_hu", "HU")


def bone_density_hint(level_label: int, hu: float) -> str:
    """The Pickhardt 2013 screening hint for an L1 value ("" for other levels or values above 160 HU)."""
    if level_label != L1:
        return ""
    prefix = "screening hint, not a diagnosis (Pickhardt et al., Ann Intern Med 2013;158:588-595): "
    if hu <= PICKHARDT_SPECIFIC_HU:
        return prefix + f"L1 <= {PICKHARDT_SPECIFIC_HU:g} HU, osteoporosis likely (> 90 % specific); confirm with DXA"
    if hu <= PICKHARDT_SENSITIVE_HU:
        return prefix + f"L1 <= {PICKHARDT_SENSITIVE_HU:g} HU, low bone density possible (90 % sensitive threshold); consider DXA"
    return ""


def core_mask(body: sitk.Image) -> np.ndarray:
    """Voxels at least :data:`EROSION_MM` inside the body mask ``body`` (uint8 image, 1 = body)."""
    distance = sitk.SignedMaurerDistanceMap(body, insideIsPositive=True, squaredDistance=False, useImageSpacing=True)
    return (sitk.GetArrayViewFromImage(distance) >= EROSION_MM) & (sitk.GetArrayViewFromImage(body) > 0)


def trabecular_hu(image: sitk.Image, label_map: sitk.Image, label: int, index_min, index_max) -> tuple[float | None, str]:
    """(median HU of the eroded core of body ``label``, note); None with the reason when not measurable.

    ``index_min``/``index_max`` (ITK order, inclusive) bound the label, so that only its box is processed.
    """
    pad = 2
    size = np.array(label_map.GetSize())
    lo = np.maximum(np.asarray(index_min) - pad, 0)
    hi = np.minimum(np.asarray(index_max) + pad + 1, size)
    box = [int(v) for v in hi - lo]
    labels = sitk.RegionOfInterest(label_map, box, [int(v) for v in lo])
    body = sitk.Cast(labels == int(label), sitk.sitkUInt8)
    core = core_mask(body)
    voxel = float(np.prod(label_map.GetSpacing()))
    core_volume = float(np.count_nonzero(core)) * voxel
    if core_volume < MIN_CORE_MM3:
        return None, (
            f"not measurable: the trabecular core ({EROSION_MM:g} mm inside the body) is {core_volume:.0f} mm3, "
            f"under {MIN_CORE_MM3:g} mm3"
        )
    values = sitk.GetArrayFromImage(sitk.RegionOfInterest(image, box, [int(v) for v in lo]))[core]
    value = float(np.median(values))
    note = f"median of {core.sum()} voxels ({core_volume / 1000:.1f} mL) at least {EROSION_MM:g} mm inside the body"
    hint = bone_density_hint(label, value)
    if hint:
        note += "; " + hint
    elif label == L1:
        note += "; above the Pickhardt 2013 L1 screening thresholds (160 HU)"
    return value, note


def rows(image: sitk.Image, label_map: sitk.Image, stats) -> dict[int, tuple]:
    """{vertebra label: ("trabecular_hu", value, "HU", note)} for every vertebral body in ``stats``."""
    result = {}
    for label, s in stats.items():
        if scheme.is_vertebra(label):
            value, note = trabecular_hu(image, label_map, label, s.index_min, s.index_max)
            if value is not None and s.touches_border:
                note += "; the body touches the volume border: core of its visible part"
            result[label] = (PARAMETER[0], value, PARAMETER[1], note)
    return result
