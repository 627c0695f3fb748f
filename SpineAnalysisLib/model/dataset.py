"""Training cases from the shared lumbar MRI folder, with what each case annotates.

The annotation is partial (``../shared/data/lumbar_mri/README.md``): a case annotates only the
labels listed in its manifest row. Disc pseudo-labels are added where two consecutive vertebral
bodies are both annotated: in each sagittal slice and each anterior-posterior column crossed by both
bodies, the voxels between the lower edge of the upper body and the upper edge of the lower body.
Those discs then count as annotated for that case.

The gap is only an outer bound of the disc: expert disc outlines (Menezes-Reis et al.) leave the
endplate rows out and bulge past the vertebral rims (central disc height 6-8.6 mm for L1-L2..L5-S1
against 11-13 mm for the gap between expert body outlines, printed by
``Testing/DataChecks/disc_height_conventions.py``). So the pseudo-disc voxels within
``PSEUDO_DISC_BORDER_MM`` of a body (keeping at least the middle row of a narrow gap), and the
unlabelled voxels within that distance in front of and behind the pseudo-disc, are marked :data:`NOT_BODY` ("background or disc, not a vertebral body")
instead of being forced to one convention; the expert disc cases then decide where a disc ends.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from .. import labels as scheme
from .classes import CHANNEL_LABELS, LABEL_TO_CHANNEL, NUM_CHANNELS
from .preprocessing import normalise_intensity, sagittal_frame

if TYPE_CHECKING:
    from .synthesis import SyntheticScene

#: The longest gap (mm) between two bodies still filled as disc.
MAX_PSEUDO_DISC_GAP_MM = 25.0
#: Width (mm) of the uncertain border of a pseudo-disc (at each endplate and in front / behind).
PSEUDO_DISC_BORDER_MM = 2.0
#: Expert structures of the shared data that do not match the image, by case: VB3_36's L4 is outlined 4-6 mm anterior
#: and superior of the body (found by ranking the per-level Dice of model 1.10.0 against the experts on all 66 scans:
#: 0.61, the next lowest 0.76; checked on the mid-sagittal overlay). The shipped weights (up to 1.10.0) were trained with
#: it; training now marks it unknown (:func:`load_training_case`), the expert-mask healthy reference leaves it out
#: (``measure.build_reference``), validation and evaluation score against it as published.
KNOWN_LABEL_ERRORS = {"VB3_36": (23,)}
#: Target value of voxels known not to be a vertebral body but either background or disc.
NOT_BODY = 255
#: Target value of voxels whose class is not known at all, left out of every loss term: the band around the body
#: outlines of a data source that draws them by another convention (:func:`mark_unknown_outlines`).
UNKNOWN = 254


def scored_prediction(predicted: np.ndarray, class_values, annotated_values, truth: np.ndarray) -> np.ndarray:
    """The predicted voxels of one class (e.g. all vertebral bodies) that a partially annotated case can score.

    ``predicted``: label (or channel) array; ``class_values``: the values of the class;
    ``annotated_values``: those the case annotates; ``truth``: the case's annotated voxels of the class.
    A predicted structure of an annotated level always counts. A predicted structure (6-connected
    component) of a level the case does not annotate, such as the sacrum below or T12 above an
    L1-L5 case, is unknown rather than an error (``../shared/data/lumbar_mri/README.md``: "what a case
    does not annotate is unknown, not background") and is left out, unless it overlaps the annotated
    voxels: then it is an annotated structure given the wrong level, and it counts (class Dice ignores
    level names; per-level Dice and the identification rate score names). Evaluation, training
    validation and the inference calibration all score with this.
    """
    in_class = np.isin(predicted, list(class_values))
    annotated = np.isin(predicted, list(annotated_values))
    other = in_class & ~annotated
    if not other.any():
        return annotated
    components = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(other.astype(np.uint8)), False))
    touching = np.unique(components[other & truth])
    return annotated | np.isin(components, touching[touching > 0])


def default_data_dir() -> Path:
    """``$SPINEANALYSIS_DATA`` or ``../shared/data/lumbar_mri`` beside the repository."""
    if os.environ.get("SPINEANALYSIS_DATA"):
        return Path(os.environ["SPINEANALYSIS_DATA"])
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lumbar_mri"


@dataclass
class CaseRecord:
    case_id: str
    source: str  # VB1, VB2, VB3, IVD
    subject_group: str
    image_file: Path | None
    label_file: Path
    annotated_labels: tuple[int, ...]


@dataclass
class TrainingCase:
    """One case in the network's frame: (slice, row S->I, column A->P), 1 mm pixels."""

    record: CaseRecord
    image: np.ndarray  # float16, normalised to [0, 1]
    target: np.ndarray  # uint8 channel index, NOT_BODY where only "not a vertebral body" is known, UNKNOWN: nothing
    annotated: np.ndarray  # bool (NUM_CHANNELS,), channel 0 always True
    labelled_slices: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    slice_spacing_mm: float = 1.0  # between sagittal slices
    # a synthetic case (label-only disc map, :mod:`.synthesis`): ``image`` is rendered anew from it at every draw
    scene: "SyntheticScene | None" = None


def read_manifest(data_dir: Path | None = None, kind: str = "image+labels") -> list[CaseRecord]:
    data_dir = Path(data_dir or default_data_dir())
    records = []
    with open(data_dir / "manifest.csv", newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            if row["split"] != "shared" or row["kind"] != kind:
                continue
            annotated = tuple(int(item.split(":")[0]) for item in row["label_values_present"].split())
            records.append(
                CaseRecord(
                    case_id=row["case_id"],
                    source=row["case_id"].split("_")[0],
                    subject_group=row["subject_group"],
                    image_file=data_dir / row["image_file"] if row["image_file"] else None,
                    label_file=data_dir / row["label_file"],
                    annotated_labels=annotated,
                )
            )
    return records


#: Seed of the fixed validation split every shipped model is validated on (``split_cases``).
SPLIT_SEED = 20261123


def split_cases(records: list[CaseRecord], validation_fraction: float = 0.2, seed: int = SPLIT_SEED) -> tuple[list[CaseRecord], list[CaseRecord]]:
    """Fixed split by subject group, stratified by source data set (at least one validation group each)."""
    train, validation = [], []
    by_source: dict[str, dict[str, list[CaseRecord]]] = {}
    for record in records:
        by_source.setdefault(record.source, {}).setdefault(record.subject_group, []).append(record)
    for source in sorted(by_source):
        groups = sorted(by_source[source], key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
        count = max(1, int(round(validation_fraction * len(groups))))
        for index, group in enumerate(groups):
            (validation if index < count else train).extend(by_source[source][group])
    return train, validation


def rows_between(upper: np.ndarray, lower: np.ndarray, max_gap_px: int) -> np.ndarray:
    """Voxels strictly between two structures, column by column ((slice, row, column) masks).

    In every (slice, column) crossed by both, the rows below the lowest ``upper`` voxel and above the
    highest ``lower`` voxel, where that gap is 1 to ``max_gap_px`` rows.
    """
    rows = np.arange(upper.shape[1])[None, :, None]
    has_both = upper.any(axis=1) & lower.any(axis=1)  # (slice, column)
    bottom_of_upper = np.where(upper, rows, -1).max(axis=1)
    top_of_lower = np.where(lower, rows, 10**9).min(axis=1)
    gap = top_of_lower - bottom_of_upper - 1
    valid = has_both & (gap > 0) & (gap <= max_gap_px)
    return valid[:, None, :] & (rows > bottom_of_upper[:, None, :]) & (rows < top_of_lower[:, None, :])


def add_pseudo_discs(target_labels: np.ndarray, annotated: set[int], max_gap_px: int) -> set[int]:
    """Fill disc pseudo-labels between consecutive annotated bodies (in place, canonical frame).

    Returns the disc labels that were added.
    """
    added = set()
    for upper in sorted(annotated, key=scheme.anatomical_rank):
        if not scheme.is_vertebra(upper):
            continue
        lower = scheme.next_vertebra(upper)
        disc = scheme.disc_label(upper)
        if lower not in annotated or disc in annotated or disc not in LABEL_TO_CHANNEL:
            continue
        upper_mask = target_labels == upper
        lower_mask = target_labels == lower
        fill = rows_between(upper_mask, lower_mask, max_gap_px) & (target_labels == 0)
        if fill.any():
            target_labels[fill] = disc
            added.add(disc)
    return added


def grown_along(mask: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """``mask`` grown by ``radius`` voxels both ways along one axis (a 1D dilation)."""
    grown = mask.copy()
    target, source = np.moveaxis(grown, axis, 0), np.moveaxis(mask, axis, 0)  # views
    for shift in range(1, radius + 1):
        target[shift:] |= source[:-shift]
        target[:-shift] |= source[shift:]
    return grown


def rows_from_top(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row counts of a (slice, row, column) mask per (slice, column): for each voxel the mask voxels at or above it
    (1 on the top row of a run), and the column's total (shape (slice, 1, column)). A disc label fills one run of
    rows per column, so these place each voxel within its column of the disc."""
    from_top = np.cumsum(mask, axis=1)
    return from_top, from_top[:, -1:, :]


def mark_uncertain_disc_borders(target_labels: np.ndarray, pseudo_discs: set[int], border_px: int) -> None:
    """Relabel the uncertain border of gap pseudo-discs as :data:`NOT_BODY` (in place, canonical frame).

    Border: in each column, the ``border_px`` pseudo-disc rows next to each body, narrowed so that at
    least the middle row of the gap stays disc (a collapsed disc still separates its two bodies); and
    background voxels within ``border_px`` columns (anterior/posterior) of a pseudo-disc.
    """
    if not pseudo_discs or border_px <= 0:
        return
    all_discs = np.isin(target_labels, list(pseudo_discs))
    uncertain = np.zeros(target_labels.shape, bool)
    for disc in pseudo_discs:  # each fills one run of rows per (slice, column)
        mask = target_labels == disc
        from_top, run = rows_from_top(mask)
        border = np.minimum(border_px, (run - 1) // 2)
        uncertain |= mask & ((from_top <= border) | (run - from_top < border))
    beside = (target_labels == 0) & grown_along(all_discs, border_px, axis=2)  # anterior/posterior
    target_labels[uncertain | beside] = -1


def mark_unknown_outlines(target_labels: np.ndarray, body_labels, outside_px: int, inside_px: int = 1) -> None:
    """Relabel the band around every vertebral-body outline as unknown (-2, in place, canonical frame).

    Band, in each sagittal slice: the non-body voxels within ``outside_px`` of a body and the body voxels within
    ``inside_px`` of a non-body voxel (square neighbourhoods), except the middle row of each disc column (as in
    :func:`mark_uncertain_disc_borders`, so a collapsed disc still separates its bodies). For a data source whose experts outline the bodies
    inside the cortical rim (the Siegen set; the published morphometry conventions measure to the outer endplate
    cortex, Genant et al., J Bone Miner Res 1993;8:1137-1148), so that where an outline lies is learned from the
    other sources while the source still teaches which level is which.
    """
    if outside_px <= 0:
        return
    bodies = np.isin(target_labels, list(body_labels))
    if not bodies.any():
        return
    near_body = grown_along(grown_along(bodies, outside_px, axis=1), outside_px, axis=2)
    outside = ~bodies
    near_outside = grown_along(grown_along(outside, inside_px, axis=1), inside_px, axis=2) if inside_px > 0 else np.zeros_like(bodies)
    band = (near_body & outside) | (near_outside & bodies)
    for disc in np.unique(target_labels[band]):
        if scheme.is_disc(int(disc)):  # the middle row of each disc column stays disc: a collapsed disc still separates
            mask = target_labels == disc
            from_top, run = rows_from_top(mask)
            band &= ~(mask & (from_top == (run + 1) // 2))
    target_labels[band] = -2


def known_error_structures(case_id: str, pseudo_discs) -> set[int]:
    """The structures of ``case_id`` listed in :data:`KNOWN_LABEL_ERRORS` and the gap pseudo-discs they bound.

    A pseudo-disc is only the gap between two expert bodies (:func:`add_pseudo_discs`), so the gap next to a
    misplaced body is wrong too (``measure.build_reference`` leaves the same discs out).
    """
    wrong = set(KNOWN_LABEL_ERRORS.get(case_id, ()))
    if not wrong:
        return wrong
    bounded = {d for d in pseudo_discs if scheme.vertebra_above_disc(d) in wrong or scheme.next_vertebra(scheme.vertebra_above_disc(d)) in wrong}
    return wrong | bounded


def training_labels(
    labels: np.ndarray, case_id: str, annotated, row_spacing_mm: float, outline_unknown_mm: float = 0.0, leave_out_known_errors: bool = True
) -> set[int]:
    """Turn one case's expert label map into its training labels (in place, canonical frame); returns what it annotates.

    Adds the gap pseudo-discs (:func:`add_pseudo_discs`) with their uncertain borders as -1 (:data:`NOT_BODY`);
    ``outline_unknown_mm`` > 0: the band around the body outlines becomes -2 (:data:`UNKNOWN`,
    :func:`mark_unknown_outlines`). ``leave_out_known_errors``: the structures of :data:`KNOWN_LABEL_ERRORS` and the
    pseudo-discs they bound (:func:`known_error_structures`) become -2 and are no longer annotated, so no loss term
    learns from them and the true body nearby is not taught as background.
    """
    annotated = set(annotated)
    pseudo_discs = add_pseudo_discs(labels, annotated, int(MAX_PSEUDO_DISC_GAP_MM / row_spacing_mm))
    wrong = known_error_structures(case_id, pseudo_discs) if leave_out_known_errors else set()
    mark_uncertain_disc_borders(labels, pseudo_discs - wrong, int(round(PSEUDO_DISC_BORDER_MM / row_spacing_mm)))
    if wrong:
        labels[np.isin(labels, list(wrong))] = -2
    if outline_unknown_mm > 0:
        bodies = [label for label in annotated - wrong if scheme.is_vertebra(label)]
        mark_unknown_outlines(labels, bodies, int(round(outline_unknown_mm / row_spacing_mm)))
    return (annotated | pseudo_discs) - wrong


def load_training_case(record: CaseRecord, outline_unknown_mm: float = 0.0) -> TrainingCase:
    """One case's image and training target (:func:`training_labels`: known label errors unknown; ``outline_unknown_mm``
    > 0: its body outlines' band is unknown)."""
    return _load_case(record, outline_unknown_mm, leave_out_known_errors=True)


def load_validation_case(record: CaseRecord) -> TrainingCase:
    """One case's image and target for validation: the expert labels as published (with the gap pseudo-discs),
    :data:`KNOWN_LABEL_ERRORS` included, so that training validation scores against the same labels as ``evaluate``
    and the published results."""
    return _load_case(record, 0.0, leave_out_known_errors=False)


def _load_case(record: CaseRecord, outline_unknown_mm: float, leave_out_known_errors: bool) -> TrainingCase:
    label_image = sitk.ReadImage(str(record.label_file))
    frame = sagittal_frame(label_image)
    if max(abs(s - 1.0) for s in frame.spacing[1:]) > 1e-3:
        raise ValueError(f"{record.case_id}: training expects 1 mm sagittal pixels, got {frame.spacing}")
    labels = frame.to_canonical(sitk.GetArrayFromImage(label_image).astype(np.int32))
    annotated = training_labels(labels, record.case_id, record.annotated_labels, frame.spacing[1], outline_unknown_mm, leave_out_known_errors)
    target, annotated_channels, labelled = channel_targets(labels, annotated)
    image = frame.to_canonical(sitk.GetArrayFromImage(sitk.ReadImage(str(record.image_file))))
    image = normalise_intensity(image).astype(np.float16)
    return TrainingCase(record, image, target, annotated_channels, labelled, float(frame.spacing[0]))


def channel_targets(labels: np.ndarray, annotated) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network's training target of a scheme label map (canonical frame; -1 = :data:`NOT_BODY`).

    Returns the channel-index target (uint8), the annotated channels (bool, background always) and
    the slices holding any labelled voxel.
    """
    target = np.zeros(labels.shape, np.uint8)
    target[labels == -1] = NOT_BODY
    target[labels == -2] = UNKNOWN
    for label in np.unique(labels):
        if label > 0 and label in LABEL_TO_CHANNEL:
            target[labels == label] = LABEL_TO_CHANNEL[label]
    annotated_channels = np.zeros(NUM_CHANNELS, bool)
    annotated_channels[0] = True
    for label in annotated:
        if label in LABEL_TO_CHANNEL:
            annotated_channels[LABEL_TO_CHANNEL[label]] = True
    labelled = np.flatnonzero((target.reshape(target.shape[0], -1) % NOT_BODY).any(axis=1))
    return target, annotated_channels, labelled


def describe_annotation(case: TrainingCase) -> str:
    names = [scheme.structure_name(CHANNEL_LABELS[c]) for c in np.flatnonzero(case.annotated) if c]
    return f"{case.record.case_id}: {', '.join(names)}"
