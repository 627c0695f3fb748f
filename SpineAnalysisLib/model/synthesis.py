"""Synthetic training images for the label-only disc maps (SynthSeg-style).

Billot B. et al., "SynthSeg: Segmentation of brain MRI scans of any contrast and resolution without
retraining", Med Image Anal 86:102789 (2023): a label map becomes an image by giving every tissue a
random mean intensity and spread, then blur, bias field and noise, so that a network learns shapes
rather than one contrast.

The 49 label-only maps of ``../shared/data/lumbar_mri/labels_only`` (Menezes-Reis et al., expert
outlines of the discs L1-L2 ... L5-S1 on native 0.43 x 0.43 x 4.4 mm sagittal slices) have no image.
Around their discs this module builds the rest of a sagittal lumbar scene from the discs themselves
(:func:`build_scene`): a vertebral body fills the rows between two consecutive discs, the disc series
is continued by translation above L1-L2 (T12-L1, T11-T12) and below L5-S1 (the sacrum), each disc is
split into nucleus and annulus, a thin endplate layer separates disc and body, a spinal canal lies
behind the column and posterior elements behind that, and smooth random tissue classes fill the
rest. :func:`render` turns the scene into an image with a new random contrast at every draw.

The synthetic case annotates the **discs only**: every other voxel is target 0, which the partial-label
loss reads as "background or a structure this case does not annotate", so the invented bodies never
teach a body outline; what the network learns from these cases is the expert disc outline in many
shapes and contrasts. The scene is a deliberately crude anatomy; its use is measured, not assumed
(model card).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from .. import labels as scheme
from .dataset import CaseRecord, TrainingCase, channel_targets, grown_along, read_manifest, rows_between
from .preprocessing import normalise_intensity, sagittal_frame

#: Tissue classes of a synthetic scene (values of :attr:`SyntheticScene.tissues`).
BACKGROUND_CLASSES = 4  # 0..3: smooth random soft-tissue classes
NUCLEUS, ANNULUS, ENDPLATE, MARROW, CORTEX, CANAL, POSTERIOR, PREVERTEBRAL = range(BACKGROUND_CLASSES, BACKGROUND_CLASSES + 8)
TISSUE_COUNT = PREVERTEBRAL + 1

#: The lumbar discs a label-only map outlines, cranial to caudal.
LUMBAR_DISCS = tuple(scheme.disc_label(v) for v in (20, 21, 22, 23, 24))

#: Canvas margins (mm) added around the disc map: cranial/caudal rows, anterior and posterior columns.
MARGIN_ROWS_MM = 60
MARGIN_ANTERIOR_MM = 80
MARGIN_POSTERIOR_MM = 90


@dataclass
class SyntheticScene:
    """A synthetic sagittal scene in the network's frame: (slice, row S->I, column A->P), 1 mm pixels."""

    tissues: np.ndarray  # uint8 tissue class (see the constants above)
    discs: np.ndarray  # uint8 scheme disc label (0 elsewhere)
    slice_spacing_mm: float


def disc_map_in_frame(image: sitk.Image) -> tuple[np.ndarray, float]:
    """A disc label map in the network's frame with 1 mm pixels, and its slice spacing (mm).

    Each disc's in-plane mask is area-averaged to 1 mm pixels and a pixel takes the disc that covers
    most of it when that covers at least half (the slices keep their native spacing, 4.4 mm for the
    label-only maps). Raises ValueError when the map holds no lumbar disc.
    """
    frame = sagittal_frame(image)
    labels = frame.to_canonical(sitk.GetArrayFromImage(image))
    present = [d for d in LUMBAR_DISCS if (labels == d).any()]
    if not present:
        raise ValueError("the label map outlines no lumbar disc (L1-L2 ... L5-S1)")
    size = (max(1, round(labels.shape[1] * frame.spacing[1])), max(1, round(labels.shape[2] * frame.spacing[2])))
    masks = torch.from_numpy(np.stack([labels == d for d in present], axis=1).astype(np.float32))
    cover = F.interpolate(masks, size=size, mode="area")  # (slice, disc, rows, columns)
    best = cover.argmax(dim=1).numpy()
    keep = cover.amax(dim=1).numpy() >= 0.5
    result = np.where(keep, np.asarray(present, np.uint8)[best], 0).astype(np.uint8)
    return result, float(frame.spacing[0])


def _shifted(mask: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """``mask`` moved by whole pixels within each slice (what leaves the canvas is dropped)."""
    result = np.zeros_like(mask)
    height, width = mask.shape[1:]
    r0, r1 = max(0, rows), min(height, height + rows)
    c0, c1 = max(0, columns), min(width, width + columns)
    if r1 > r0 and c1 > c0:
        result[:, r0:r1, c0:c1] = mask[:, r0 - rows : r1 - rows, c0 - columns : c1 - columns]
    return result


def _eroded_in_plane(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion of each slice by a (2 radius + 1)^2 square."""
    if radius <= 0:
        return mask.copy()
    padded = torch.from_numpy(mask.astype(np.float32))[:, None]
    outside = F.max_pool2d(1.0 - padded, 2 * radius + 1, stride=1, padding=radius)
    return (outside[:, 0].numpy() == 0) & mask


def _smooth_random_field(shape: tuple[int, int, int], cell_mm: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field per slice: standard normal noise on a ``cell_mm`` grid, upsampled bicubically."""
    coarse = (max(2, int(shape[1] / cell_mm) + 2), max(2, int(shape[2] / cell_mm) + 2))
    noise = torch.from_numpy(rng.standard_normal((shape[0], 1) + coarse).astype(np.float32))
    return F.interpolate(noise, size=shape[1:], mode="bicubic", align_corners=False)[:, 0].numpy()


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.array(np.nonzero(mask), float)[1:].mean(axis=1)  # (row, column)


def build_scene(discs: np.ndarray, slice_spacing_mm: float, rng: np.random.Generator) -> SyntheticScene:
    """A synthetic lumbar scene around a disc map in the network's frame (1 mm pixels; see the module docstring).

    Sizes are drawn from ``rng``: endplate layer 1-2 mm, annulus rim 1-2 mm (discs are 6-9 mm high), canal 10-16 mm deep,
    posterior elements 30-45 mm, prevertebral band 5-15 mm.
    """
    canvas = (
        discs.shape[0],
        discs.shape[1] + 2 * MARGIN_ROWS_MM,
        discs.shape[2] + MARGIN_ANTERIOR_MM + MARGIN_POSTERIOR_MM,
    )
    placed = np.zeros(canvas, np.uint8)
    placed[:, MARGIN_ROWS_MM : MARGIN_ROWS_MM + discs.shape[1], MARGIN_ANTERIOR_MM : MARGIN_ANTERIOR_MM + discs.shape[2]] = discs
    present = [d for d in LUMBAR_DISCS if (placed == d).any()]
    chain = [placed == d for d in present]
    if len(present) >= 2:  # continue the series by the step between the outermost discs
        up = np.round(_centroid(chain[0]) - _centroid(chain[1])).astype(int)
        down = np.round(_centroid(chain[-1]) - _centroid(chain[-2])).astype(int)
        above = [_shifted(chain[0], *up), _shifted(chain[0], *(2 * up))]
        sacrum_bound = _shifted(chain[-1], *(2 * down))
        virtual = above[1] | above[0]
        chain = [above[1], above[0]] + chain + [sacrum_bound]
    else:
        virtual, sacrum_bound = np.zeros(canvas, bool), np.zeros(canvas, bool)
    all_discs = (placed > 0) | virtual

    tissues = np.zeros(canvas, np.uint8)
    background = _smooth_random_field(canvas, float(rng.uniform(12, 30)), rng)
    edges = np.quantile(background, np.sort(rng.uniform(0.1, 0.9, BACKGROUND_CLASSES - 1)))
    tissues[:] = np.digitize(background, edges).astype(np.uint8)

    endplate_px = int(rng.integers(1, 3))
    body = np.zeros(canvas, bool)
    for upper, lower in zip(chain[:-1], chain[1:]):
        body |= rows_between(upper, lower, 60)
    body |= sacrum_bound  # not a disc: S1 and the fused segments below are bone
    body &= ~all_discs
    spine = body | all_discs
    columns = np.arange(canvas[2])[None, None, :]
    anterior = np.where(spine, columns, 10**6).min(axis=2)  # first spine column per (slice, row)
    posterior = np.where(spine, columns, -1).max(axis=2)  # last
    in_spine_row = posterior >= 0
    mid_slice = int(np.argmax((placed > 0).sum(axis=(1, 2))))
    central = (np.abs(np.arange(canvas[0]) - mid_slice) * slice_spacing_mm <= rng.uniform(6, 10))[:, None, None]

    canal_depth = int(rng.integers(10, 17))
    posterior_depth = int(rng.integers(30, 46))
    prevertebral = int(rng.integers(5, 16))
    gap = int(rng.integers(0, 2))
    after = columns - posterior[..., None]
    before = anterior[..., None] - columns
    behind = in_spine_row[..., None] & (after > 0)
    tissues[behind & (after <= gap)] = CORTEX
    canal = behind & (after > gap) & (after <= gap + canal_depth)
    tissues[canal & central] = CANAL
    elements = behind & (after <= gap + canal_depth + posterior_depth) & ~(canal & central)
    tissues[elements & (_smooth_random_field(canvas, 8.0, rng) > -0.3)] = POSTERIOR
    tissues[in_spine_row[..., None] & (before > 0) & (before <= prevertebral)] = PREVERTEBRAL

    tissues[body] = MARROW
    near_disc = grown_along(all_discs, endplate_px, axis=1)  # cranio-caudal
    tissues[body & near_disc] = ENDPLATE
    tissues[body & ~_eroded_in_plane(body, 1) & ~near_disc] = CORTEX
    nucleus = _eroded_in_plane(all_discs, int(rng.integers(1, 3)))
    tissues[all_discs & ~nucleus] = ANNULUS
    tissues[nucleus] = NUCLEUS
    return SyntheticScene(tissues, placed, slice_spacing_mm)


def render(scene: SyntheticScene, rng: np.random.Generator) -> np.ndarray:
    """An image of ``scene`` with a new random contrast, float32 in [0, 1] (SynthSeg's generative model).

    Each tissue gets a mean drawn uniformly in [0, 1] and a spread of 1-6 % of the range; marrow and
    background get a smooth texture; the slice is blurred in plane by a Gaussian of 0.3-1 px (partial
    volume). Bias field, gamma, noise and resolution loss come afterwards from the training augmenter.
    """
    means = rng.uniform(0.0, 1.0, TISSUE_COUNT).astype(np.float32)
    spreads = rng.uniform(0.01, 0.06, TISSUE_COUNT).astype(np.float32)
    tissues = scene.tissues
    image = means[tissues] + spreads[tissues] * rng.standard_normal(tissues.shape).astype(np.float32)
    texture = _smooth_random_field(tissues.shape, float(rng.uniform(3, 10)), rng)
    textured = (tissues < BACKGROUND_CLASSES) | (tissues == MARROW) | (tissues == POSTERIOR)
    image += np.where(textured, float(rng.uniform(0.0, 0.08)) * texture, 0.0).astype(np.float32)
    sigma = float(rng.uniform(0.3, 1.0))
    radius = 2
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = torch.from_numpy((kernel / kernel.sum()).astype(np.float32))
    slices = torch.from_numpy(image)[:, None]
    slices = F.conv2d(F.pad(slices, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    slices = F.conv2d(F.pad(slices, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return normalise_intensity(slices[:, 0].numpy())


def scene_from_file(path, rng: np.random.Generator) -> SyntheticScene:
    """:func:`build_scene` around the disc map stored at ``path`` (NIfTI/NRRD)."""
    discs, spacing = disc_map_in_frame(sitk.ReadImage(str(path)))
    return build_scene(discs, spacing, rng)


def load_synthetic_disc_cases(data_dir, exclude_subject_groups: set[str], seed: int) -> list[TrainingCase]:
    """Training cases built from the label-only disc maps of ``data_dir``'s manifest (``kind`` labels_only).

    Maps of a subject in ``exclude_subject_groups`` are left out (``IVDLO_11`` is the same annotation as
    the validation case ``IVD_11``). Each scene is built once from ``seed`` and the map's position in the
    manifest (reproducible); its image is rendered anew at every draw by the training sampler. The
    cases annotate the lumbar discs only (source ``SYN``).
    """
    cases = []
    for index, record in enumerate(read_manifest(data_dir, kind="labels_only")):
        if record.subject_group in exclude_subject_groups:
            continue
        scene = scene_from_file(record.label_file, np.random.default_rng([seed, index]))
        present = tuple(int(d) for d in np.unique(scene.discs[scene.discs > 0]))
        target, annotated, labelled = channel_targets(scene.discs, present)
        synthetic = CaseRecord(f"SYN_{record.case_id}", "SYN", record.subject_group, None, record.label_file, present)
        image = np.zeros(target.shape, np.float16)  # rendered at each draw
        cases.append(TrainingCase(synthetic, image, target, annotated, labelled, scene.slice_spacing_mm, scene))
    return cases
