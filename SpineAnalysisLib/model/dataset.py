"""Training cases from the shared lumbar MRI folder, with what each case annotates.

The annotation is partial (``../shared/data/lumbar_mri/README.md``): a case annotates only the
labels listed in its manifest row. Disc pseudo-labels are added where two consecutive vertebral
bodies are both annotated: in each sagittal slice and each anterior-posterior column crossed by both
bodies, the voxels between the lower edge of the upper body and the upper edge of the lower body.
Those discs then count as annotated for that case.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import labels as scheme
from .classes import CHANNEL_LABELS, LABEL_TO_CHANNEL, NUM_CHANNELS
from .preprocessing import normalise_intensity, sagittal_frame

#: The longest gap (mm) between two bodies still filled as disc.
MAX_PSEUDO_DISC_GAP_MM = 25.0


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
    target: np.ndarray  # uint8 channel index
    annotated: np.ndarray  # bool (NUM_CHANNELS,), channel 0 always True
    labelled_slices: np.ndarray = field(default_factory=lambda: np.zeros(0, int))


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


def split_cases(records: list[CaseRecord], validation_fraction: float = 0.2, seed: int = 20261123) -> tuple[list[CaseRecord], list[CaseRecord]]:
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
        rows = np.arange(target_labels.shape[1])[None, :, None]
        upper_mask = target_labels == upper
        lower_mask = target_labels == lower
        has_both = upper_mask.any(axis=1) & lower_mask.any(axis=1)  # (slice, column)
        if not has_both.any():
            continue
        bottom_of_upper = np.where(upper_mask, rows, -1).max(axis=1)
        top_of_lower = np.where(lower_mask, rows, 10**9).min(axis=1)
        gap = top_of_lower - bottom_of_upper - 1
        valid = has_both & (gap > 0) & (gap <= max_gap_px)
        fill = valid[:, None, :] & (rows > bottom_of_upper[:, None, :]) & (rows < top_of_lower[:, None, :]) & (target_labels == 0)
        if fill.any():
            target_labels[fill] = disc
            added.add(disc)
    return added


def load_training_case(record: CaseRecord) -> TrainingCase:
    label_image = sitk.ReadImage(str(record.label_file))
    frame = sagittal_frame(label_image)
    if max(abs(s - 1.0) for s in frame.spacing[1:]) > 1e-3:
        raise ValueError(f"{record.case_id}: training expects 1 mm sagittal pixels, got {frame.spacing}")
    labels = frame.to_canonical(sitk.GetArrayFromImage(label_image).astype(np.int32))
    annotated = set(record.annotated_labels)
    annotated |= add_pseudo_discs(labels, annotated, int(MAX_PSEUDO_DISC_GAP_MM / frame.spacing[1]))
    target = np.zeros(labels.shape, np.uint8)
    for label in np.unique(labels):
        if label != 0 and label in LABEL_TO_CHANNEL:
            target[labels == label] = LABEL_TO_CHANNEL[label]
    annotated_channels = np.zeros(NUM_CHANNELS, bool)
    annotated_channels[0] = True
    for label in annotated:
        if label in LABEL_TO_CHANNEL:
            annotated_channels[LABEL_TO_CHANNEL[label]] = True
    image = frame.to_canonical(sitk.GetArrayFromImage(sitk.ReadImage(str(record.image_file))))
    image = normalise_intensity(image).astype(np.float16)
    labelled = np.flatnonzero(target.reshape(target.shape[0], -1).any(axis=1))
    return TrainingCase(record, image, target, annotated_channels, labelled)


def describe_annotation(case: TrainingCase) -> str:
    names = [scheme.structure_name(CHANNEL_LABELS[c]) for c in np.flatnonzero(case.annotated) if c]
    return f"{case.record.case_id}: {', '.join(names)}"
