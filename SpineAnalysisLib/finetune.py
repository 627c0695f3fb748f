"""Fine-tuning a model on annotator-corrected cases (a dataset folder written by :mod:`.annotation`).

:func:`finetune` starts from a model's weights (the shipped model by default) and its own network
configuration, trains with :func:`SpineAnalysisLib.model.training.train` (progress lines, resumable
checkpoints, CPU or CUDA), and writes a *new* model - its own name and version, manifest and sha256 - into a
model folder (by default the user model folder, where :func:`~SpineAnalysisLib.model.store.list_models` finds
it). The base model is never modified and the default model does not change: a fine-tuned model is used
only when picked by name (no surprise retraining).

Cases of the dataset folder become training records with source ``ANN``: annotated labels are every label
present in the corrected map plus the labels ``dataset.json`` declares (a declared label absent from a case
is taken as truly absent, unless the case holds no disc at all - bodies only - or no vertebra at all: then the
missing class is unknown) plus the labels of the case's original model output (a structure the annotator erased
is truly absent), except the levels beyond the map's highest and lowest body that the image shows at least in part
(:func:`levels_beyond_the_ends`: a body the edge cuts, missed and not added, is unknown). A case exported as a partial map (its provenance's ``annotated_labels``, see
:mod:`.annotation`) annotates only the labels it holds and those listed there; every other label is unknown. Images whose sagittal pixels are not 1 mm are resampled in-plane into the run
folder first (labels nearest-neighbour). Validation figures (Dice per level, vertebrae and discs) are
computed before and after on held-out cases: annotated cases grouped by study (all of them when there is
only one study, which is then reported), plus the shipped validation split when shipped data are mixed in.

The run folder ``.<model folder name>.run`` beside the model folder holds checkpoints; running the same
command again resumes there (another base model, other cases or other settings are refused, see
:func:`_check_resumable`). The model folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

try:
    import fcntl

    msvcrt = None
except ImportError:  # Windows
    import msvcrt

    fcntl = None

from . import __version__
from . import annotation, imageio
from . import labels as scheme
from .errors import InputError
from .model import store
from .model.classes import CHANNEL_LABELS, DISC_CLASSES, LABEL_TO_CHANNEL, VERTEBRA_CHANNELS
from .model.dataset import CaseRecord, TrainingCase, default_data_dir, load_validation_case, read_manifest, split_cases, SPLIT_SEED
from .model.network import NetworkConfig, build_network
from .model.preprocessing import sagittal_frame
from .model.predict import InferenceSettings
from .model.training import TRAINING_VALIDATION, TrainingConfig, _dice, describe_hardware, predict_case, train

ANNOTATED_SOURCE = "ANN"


@dataclass
class FinetuneResult:
    model: store.ModelInfo
    before: dict
    after: dict
    losses: list[float]
    train_cases: list[str]
    validation_cases: list[str]
    seconds: float
    device: str
    notes: list[str] = field(default_factory=list)

    @property
    def first_loss(self) -> float | None:
        return self.losses[0] if self.losses else None

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None

    def summary(self) -> dict:
        return {
            "model": self.model.label,
            "folder": str(self.model.folder),
            "sha256": self.model.manifest.get("sha256"),
            "device": self.device,
            "seconds": round(self.seconds, 1),
            "train_cases": self.train_cases,
            "validation_cases": self.validation_cases,
            "loss_first": self.first_loss,
            "loss_last": self.last_loss,
            "validation_before": self.before,
            "validation_after": self.after,
            "notes": self.notes,
        }


def user_model_folder() -> Path:
    """Where fine-tuned models go: the first folder of ``$SPINEANALYSIS_MODELS``, else ``~/.spineanalysis/models``."""
    folders = [p for p in os.environ.get("SPINEANALYSIS_MODELS", "").split(os.pathsep) if p]
    return Path(folders[0]) if folders else Path.home() / ".spineanalysis" / "models"


# -- dataset folder -> training records ------------------------------------------------------------
def _resample_in_plane(image: sitk.Image, labels: sitk.Image) -> tuple[sitk.Image, sitk.Image] | None:
    """Image and labels with 1 mm sagittal pixels (slice thickness kept); None when they already are."""
    frame = sagittal_frame(labels)
    if max(abs(s - 1.0) for s in frame.spacing[1:]) <= 1e-3:
        return None
    spacing = list(labels.GetSpacing())
    size = list(labels.GetSize())
    new_spacing, new_size = spacing[:], size[:]
    for numpy_axis in frame.axes[1:]:
        axis = 2 - numpy_axis
        new_spacing[axis] = 1.0
        new_size[axis] = max(1, int(round(size[axis] * spacing[axis])))
    direction = np.asarray(labels.GetDirection(), float).reshape(3, 3)
    origin = np.asarray(labels.GetOrigin(), float) + direction @ ((np.asarray(new_spacing) - np.asarray(spacing)) / 2)
    grid = sitk.Image(new_size, sitk.sitkUInt8)
    grid.SetSpacing(new_spacing)
    grid.SetOrigin(tuple(origin))
    grid.SetDirection(labels.GetDirection())
    resampled_image = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    resampled_labels = sitk.Resample(labels, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return resampled_image, resampled_labels


def _original_labels(path: Path) -> set[int]:
    """Labels of the model's output kept beside a correction: a structure the annotator erased is known to be
    absent (taught as background), not unknown - else the gap pseudo-disc would put an erased disc back."""
    if not path.exists():
        return set()
    return {int(v) for v in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))) if v}


def _in_annotated_classes(labels: set[int], present: set[int]) -> set[int]:
    """Those of ``labels`` (declared by the dataset, or erased from the model's output) that a case annotates by
    leaving them out. A corrected map without any disc (or any vertebra) is a partial annotation of the bodies (or
    discs) only, as the shared data's VB (IVD) cases: its missing discs (vertebrae) are unknown, not absent, and the
    gap pseudo-discs fill in between its bodies."""
    has_disc = any(scheme.is_disc(v) for v in present)
    has_vertebra = any(scheme.is_vertebra(v) for v in present)
    return {v for v in labels if (has_disc or not scheme.is_disc(v)) and (has_vertebra or not scheme.is_vertebra(v))}


#: The k-th vertebra beyond a chain's end counts as (partly) in view when the image reaches ``k - IN_VIEW_PITCHES``
#: pitches past the end body's centroid: its near half would be inside (a body is about 0.7 of a pitch tall, see
#: :mod:`.model.chain`); 0.5 errs towards unknown, the safe side.
IN_VIEW_PITCHES = 0.5


def levels_beyond_the_ends(labels: sitk.Image) -> set[int]:
    """The vertebrae beyond the highest and lowest body of a label map that lie at least partly in the image, and the
    discs on the way to them (e.g. T11 and T11-T12 above a top T12 with room for part of T11).

    Anatomy puts a vertebra there, so a level the map lacks beyond its ends is not absent, only not outlined: a body
    the top or bottom edge cuts, that the model missed and the annotator did not add. The room is measured as
    :func:`.model.chain.room_above_mm` / ``room_below_mm`` do (along the chain's end step, in pitches); fewer than two
    bodies above the sacrum give no pitch and nothing. ``Testing/DataChecks/edge_levels.py`` on the 63 shared expert
    body maps: S1 marked below the 55 maps that end at L5 with the sacrum noted in view, nothing below the 8 that end
    at S1; a top body within 8 rows of the edge removed (8 maps, 10 683-57 956 voxels) comes out unknown in 8/8. The
    0.5-pitch margin can mark a level whose disc only is in view (VB1_08's T9 above a T10 3 rows from the edge),
    which costs nothing: the level has no voxels there."""
    from .model import chain

    frame = sagittal_frame(labels)
    array = frame.to_canonical(sitk.GetArrayFromImage(labels))
    bodies = sorted((int(v) for v in np.unique(array) if v and scheme.is_vertebra(int(v))), key=scheme.anatomical_rank)
    if len(bodies) < 2:
        return set()
    spacing = np.asarray(frame.spacing, float)
    centroids = np.array([np.argwhere(array == body).mean(axis=0) * spacing for body in bodies])
    names = [scheme.structure_name(body) for body in bodies]
    extent = [(array.shape[1] - 1) * spacing[1], (array.shape[2] - 1) * spacing[2]]
    beyond = set()
    for room_mm, end, step in (
        (chain.room_above_mm(centroids, names, extent), bodies[0], scheme.previous_vertebra),
        (chain.room_below_mm(centroids, names, extent), bodies[-1], scheme.next_vertebra),
    ):
        room, pitch = room_mm
        if pitch <= 0:
            continue
        level, k = end, 1
        while (k - IN_VIEW_PITCHES) * pitch < room:
            following = step(level)
            if following is None:
                break
            beyond |= {following, scheme.disc_label(min((level, following), key=scheme.anatomical_rank))}
            level, k = following, k + 1
    return beyond


def dataset_records(dataset_dir: str | os.PathLike, work_dir: str | os.PathLike | None = None) -> list[CaseRecord]:
    """Training records of an annotation dataset folder (resampled copies go to ``work_dir`` when needed)."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise InputError(f"{dataset_dir}: no such dataset folder")
    dataset = annotation.read_dataset_json(dataset_dir)
    if dataset is None:
        raise InputError(f"{dataset_dir}: has no dataset.json; export corrected cases into it first (export-training)")
    declared = {value for value in annotation.declared_labels(dataset).values() if value}
    cases = annotation.list_cases(dataset_dir)
    if not cases:
        raise InputError(f"{dataset_dir}: holds no case with both imagesTr/<case>_0000.nii.gz and labelsTr/<case>.nii.gz")
    records = []
    for case_id in cases:
        paths = annotation.case_file_paths(dataset_dir, case_id)
        labels = sitk.ReadImage(str(paths["labels"]))
        present = {int(v) for v in np.unique(sitk.GetArrayViewFromImage(labels)) if v}
        provenance = {}
        if paths["provenance"].exists():
            try:
                provenance = json.loads(paths["provenance"].read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass
        group = provenance.get("source_image", {}).get("StudyInstanceUID") or case_id
        image_file, label_file = paths["image"], paths["labels"]
        if work_dir is not None:
            target_image = Path(work_dir) / "images" / f"{case_id}.nii.gz"
            target_labels = Path(work_dir) / "labels" / f"{case_id}.nii.gz"
            stamp = Path(work_dir) / "labels" / f"{case_id}.source"
            source_stamp = f"{paths['labels'].stat().st_mtime_ns} {paths['image'].stat().st_mtime_ns}"
            if target_labels.exists() and stamp.exists() and stamp.read_text(encoding="utf-8") == source_stamp:
                image_file, label_file = target_image, target_labels
            else:
                resampled = _resample_in_plane(sitk.ReadImage(str(paths["image"])), labels)
                if resampled is not None:
                    target_image.parent.mkdir(parents=True, exist_ok=True)
                    target_labels.parent.mkdir(parents=True, exist_ok=True)
                    sitk.WriteImage(resampled[0], str(target_image), True)
                    sitk.WriteImage(resampled[1], str(target_labels), True)
                    stamp.write_text(source_stamp)
                    image_file, label_file = target_image, target_labels
        stated = provenance.get("annotated_labels")
        if isinstance(stated, dict):  # a partial map: only what it holds and what the annotator listed
            annotated = present | {int(value) for value in stated}
        else:
            original = _original_labels(paths["original"])
            annotated = present | _in_annotated_classes(declared | original, present)
            annotated -= levels_beyond_the_ends(labels) - present - original  # not outlined, but in view: unknown
        records.append(CaseRecord(case_id, ANNOTATED_SOURCE, str(group), image_file, label_file, tuple(sorted(annotated))))
    if not any(set(r.annotated_labels) & set(LABEL_TO_CHANNEL) - {0} for r in records):
        raise InputError(f"{dataset_dir}: no case holds a level the network predicts ({', '.join(map(str, CHANNEL_LABELS[1:]))})")
    return records


# -- validation figures -----------------------------------------------------------------------------
def validation_figures(network: torch.nn.Module, cases: list[TrainingCase], device: torch.device, settings: InferenceSettings = TRAINING_VALIDATION) -> dict:
    """Mean Dice per level (the predicted level must be the right one) over annotated, present levels:
    all levels, vertebrae, discs; and the number of cases. ``settings``: the model's inference settings."""
    vertebra_channels = set(VERTEBRA_CHANNELS)
    disc_channels = {LABEL_TO_CHANNEL[d] for d in DISC_CLASSES}
    all_scores, vertebra_scores, disc_scores = [], [], []
    for case in cases:
        classes = predict_case(network, case, device, settings)
        for channel in np.flatnonzero(case.annotated):
            if channel == 0:
                continue
            dice = _dice(classes == channel, case.target == channel)
            if dice is None:
                continue
            all_scores.append(dice)
            (vertebra_scores if channel in vertebra_channels else disc_scores if channel in disc_channels else []).append(dice)

    def mean(values):
        return round(float(np.mean(values)), 4) if values else None

    return {"level_dice": mean(all_scores), "vertebra_level_dice": mean(vertebra_scores), "disc_level_dice": mean(disc_scores), "cases": len(cases), "levels_scored": len(all_scores)}


def segmentation_figures(model_folder: Path, records: list[CaseRecord], device: torch.device) -> dict:
    """The annotated validation cases segmented as ``spineanalysis segment`` runs the model (localisation, the model's
    inference settings, level labelling), scored as ``evaluate`` scores: mean body and disc class Dice, mean Dice per
    level and the levels identified. :func:`validation_figures` scores the bare network, whose levels before the
    level-labelling step can be wrong where the segmentation is right (the sample's T12: 0.14 against 1.0)."""
    from .evaluation import score_prediction
    from .inference import forget_networks, segment_image

    vertebra, disc, level, identified, identifiable = [], [], [], 0, 0
    for record in records:
        image = sitk.ReadImage(str(record.image_file))
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(record.label_file))).astype(np.int32)
        predicted = sitk.GetArrayFromImage(segment_image(image, str(model_folder), device.type).label_map).astype(np.int32)
        annotated = [label for label in record.annotated_labels if label in LABEL_TO_CHANNEL]
        scores = score_prediction(predicted, reference, image, [l for l in annotated if l not in DISC_CLASSES], [l for l in annotated if l in DISC_CLASSES])
        vertebra += [scores["dice_vertebra"]] if scores.get("dice_vertebra") is not None else []
        disc += [scores["dice_disc"]] if scores.get("dice_disc") is not None else []
        level += [d for d in scores["dice_per_level"].values() if d is not None]
        identified, identifiable = identified + scores["identified"], identifiable + scores["identifiable"]
    forget_networks(model_folder)  # a temporary model folder is not used again

    def mean(values):
        return round(float(np.mean(values)), 4) if values else None

    return {"segment_vertebra_dice": mean(vertebra), "segment_disc_dice": mean(disc), "segment_level_dice": mean(level),
            "segment_identified": f"{identified}/{identifiable}", "segment_cases": len(records)}  # fmt: skip


# -- fine-tuning -----------------------------------------------------------------------------------
def _next_version(name: str) -> str:
    versions = [m.version for m in store.list_models() if m.name == name]
    numbers = [int(v) for v in versions if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def _split_annotated(records: list[CaseRecord], seed: int, fraction: float) -> tuple[list[CaseRecord], list[CaseRecord], bool]:
    groups = {r.subject_group for r in records}
    if len(groups) < 2:
        return list(records), list(records), True
    train_records, validation_records = split_cases(records, fraction, seed)
    return train_records, validation_records, False


def _base_class_dice_weight(manifest: dict) -> float:
    """The class Dice weight of the base model's last training phase: fine-tuning keeps the loss it was trained with."""
    try:
        return float(((manifest.get("training") or {}).get("config") or {}).get("class_dice_weight", 0.0))
    except (TypeError, ValueError):
        return 0.0


@contextmanager
def _run_lock(run_dir: Path):
    """Hold ``run_dir`` for this process: a second fine-tune into the same folder (two terminals, both taking the next
    free version) would share its checkpoint and log and end in a traceback; it is refused in one line instead."""
    handle = open(run_dir / ".lock", "a+b")
    try:
        try:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # Windows
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            raise InputError(
                f"{run_dir}: another fine-tune is running into this folder; wait for it, or give this one its own -o or --version"
            ) from None
        yield
    finally:
        handle.close()


RUN_IDENTITY = "finetune.json"
#: Settings that may change between an interrupted run and its resumption (speed and logging only).
_RESUME_FREE = ("threads", "log_every", "checkpoint_every", "validate_every")


def _run_identity(base: store.ModelInfo, dataset_dir, train_records: list[CaseRecord], validation_records: list[CaseRecord], config: TrainingConfig) -> dict:
    """What a run's checkpoint depends on: the base weights, the cases (and when their labels were written) and the
    training settings."""

    def stamp(record: CaseRecord) -> str:
        path = Path(record.label_file)
        return f"{record.case_id}:{path.stat().st_mtime_ns}" if path.exists() else record.case_id

    return {
        "base model": f"{base.label} (sha256 {base.manifest.get('sha256')})",
        "dataset": str(Path(dataset_dir).resolve()),
        "training cases": [stamp(r) for r in train_records],
        "validation cases": [r.case_id for r in validation_records],
        **{f"--{k.replace('_', '-')}" if k in ("steps", "batch_size", "crop", "learning_rate") else k: v
           for k, v in asdict(config).items() if k not in _RESUME_FREE},
    }


def _check_resumable(run_dir: Path, identity: dict) -> None:
    """Resume only the run these arguments started: a checkpoint left by a fine-tune of another base model, other
    cases or other settings would otherwise be continued silently, and the new model's manifest would misstate
    what its weights came from. Writes the identity of a new run."""
    path = run_dir / RUN_IDENTITY
    identity = json.loads(json.dumps(identity))  # tuples -> lists, as read back
    if (run_dir / "checkpoint.pt").exists():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = {}
        if not recorded:
            raise InputError(f"{run_dir} holds an interrupted fine-tune whose settings were not recorded; delete the folder to start over")
        differs = [key for key in identity if recorded.get(key) != identity[key]]
        if differs:
            raise InputError(
                f"{run_dir} holds an interrupted fine-tune with another {', '.join(differs[:4])}"
                f"{' ...' if len(differs) > 4 else ''}; rerun that command to resume it, or delete the folder to start over"
            )
        return
    path.write_text(json.dumps(identity, indent=1) + "\n", encoding="utf-8")


def finetune(
    dataset_dir: str | os.PathLike,
    output_model_dir: str | os.PathLike | None = None,
    base_model: str | None = None,
    steps: int = 300,
    mix_shipped_data: bool = False,
    shipped_data_dir: str | os.PathLike | None = None,
    name: str | None = None,
    version: str | None = None,
    batch_size: int = 8,
    crop: int | None = None,
    learning_rate: float = 2e-4,
    seed: int = 20261123,
    threads: int = 2,
    validation_fraction: float = 0.2,
    annotated_share: float = 0.5,
    checkpoint_every: int = 50,
    log_every: int = 25,
    freeze_batch_norm: bool = True,
    keep_run: bool = False,
    log: Callable[[str], None] = print,
) -> FinetuneResult:
    """Fine-tune ``base_model`` (default: the shipped model) on the cases of ``dataset_dir``.

    ``mix_shipped_data`` adds the shipped training data (``shipped_data_dir`` or ``../shared/data/lumbar_mri``);
    annotated cases are then drawn ``annotated_share`` of the time. Returns the new model and the validation
    figures before and after. ``freeze_batch_norm`` keeps the base model's batch-norm statistics (small
    fine-tuning batches would otherwise shift them). Raises :class:`InputError`/:class:`ModelError` with a
    one-line reason.
    """
    started = time.time()
    if steps < 1:
        raise InputError("steps must be at least 1")
    base = store.find_model(base_model)
    base_network = store.load_network(base)  # verifies the checksum
    network_config = dict(base.manifest["network"])
    name = name or (base.name if base.name.endswith("-finetuned") else f"{base.name}-finetuned")
    version = version or _next_version(name)
    output_model_dir = Path(output_model_dir) if output_model_dir else user_model_folder() / f"{name}-{version}"
    output_model_dir = output_model_dir.expanduser().resolve()
    if output_model_dir.exists() and any(output_model_dir.iterdir()):
        raise InputError(f"{output_model_dir}: already exists; a fine-tuned model is never written over another model")
    try:
        output_model_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{output_model_dir.parent}: cannot create the model folder ({error.strerror or error})") from None
    if not os.access(output_model_dir.parent, os.W_OK):
        raise InputError(f"{output_model_dir.parent}: not writable")
    net = NetworkConfig.from_dict(network_config)
    crop = crop or 224
    if crop % net.size_multiple:
        raise InputError(f"crop {crop} must be a multiple of {net.size_multiple} for this network")
    run_dir = output_model_dir.parent / f".{output_model_dir.name}.run"
    run_dir.mkdir(exist_ok=True)
    with _run_lock(run_dir):

        notes: list[str] = []
        annotated = dataset_records(dataset_dir, run_dir / "data")
        ann_train, ann_validation, same = _split_annotated(annotated, seed, validation_fraction)
        if same:
            notes.append("only one study in the dataset: validation figures are on the training case(s)")
        train_records, validation_records = list(ann_train), list(ann_validation)
        config_extra = {}
        if mix_shipped_data:
            data_dir = Path(shipped_data_dir) if shipped_data_dir else default_data_dir()
            if not (data_dir / "manifest.csv").exists():
                raise InputError(f"{data_dir}: shipped training data not found (manifest.csv); set SPINEANALYSIS_DATA or pass --data")
            shipped_train, shipped_validation = split_cases(read_manifest(data_dir), validation_fraction, SPLIT_SEED)
            train_records += shipped_train
            validation_records += shipped_validation
            disc_case_weight = TrainingConfig().disc_case_weight  # as the sampler will draw the shipped cases
            shipped_weight = sum(disc_case_weight if r.source == "IVD" else 1.0 for r in shipped_train)
            share = min(max(annotated_share, 0.01), 0.99)
            config_extra["annotated_case_weight"] = shipped_weight * share / (1 - share) / max(1, len(ann_train))
            notes.append(f"mixed with {len(shipped_train)} shipped training cases from {data_dir}")
        config = TrainingConfig(
            steps=steps, batch_size=batch_size, crop=crop, learning_rate=learning_rate, seed=seed, validation_fraction=validation_fraction,
            validate_every=steps, checkpoint_every=checkpoint_every, threads=threads, network=network_config, log_every=log_every,
            freeze_batch_norm=freeze_batch_norm, class_dice_weight=_base_class_dice_weight(base.manifest), **config_extra,
        )  # fmt: skip
        _check_resumable(run_dir, _run_identity(base, dataset_dir, train_records, validation_records, config))
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.set_num_threads(threads)
        log(f"fine-tuning {base.label} on {len(train_records)} cases ({len(ann_train)} annotated), validating on {len(validation_records)}; {steps} steps on {device.type}")

        validation_cases = [load_validation_case(r) for r in validation_records]  # the expert labels as published
        settings = InferenceSettings.from_manifest(base.manifest)
        before = validation_figures(base_network.to(device), validation_cases, device, settings)
        before.update(segmentation_figures(base.folder, ann_validation, device))
        log(f"validation before: {before}")
        initial_state = {k: v.detach().cpu() for k, v in base_network.state_dict().items()}
        del base_network
        # validation runs here, before and after, on the same cases (not a second time inside train)
        weights = train(run_dir, config, log=log, records=train_records, validation_records=[], initial_state=initial_state)

        state = torch.load(weights, map_location="cpu", weights_only=True)
        tuned = build_network(net)
        tuned.load_state_dict(state)
        after = validation_figures(tuned.to(device).eval(), validation_cases, device, settings)
        (run_dir / "split.json").write_text(json.dumps({"train": [r.case_id for r in train_records], "validation": [r.case_id for r in validation_records]}, indent=1))
        records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        losses = [float(r["loss"]) for r in records if "loss" in r]
        elapsed = max((r.get("elapsed_s", 0) for r in records), default=0.0)

        created = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        manifest = {
            "name": name,
            "version": version,
            "description": f"{base.label} fine-tuned on annotator-corrected cases ({Path(dataset_dir).name})",
            "network": network_config,
            "expected_input": base.manifest.get("expected_input", {}),
            "inference": base.manifest.get("inference", {}),  # slice smoothing, test-time scales, threshold: the base model's way of running
            "base_model": {"name": base.name, "version": base.version, "sha256": base.manifest.get("sha256")},
            "created_utc": created,
            "software": f"SpineAnalysis {__version__}",
            "training": {
                "kind": "fine-tune",
                "dataset": str(Path(dataset_dir).resolve()),
                "train_cases": [r.case_id for r in train_records],
                "validation_cases": [r.case_id for r in validation_records],
                "mixed_with_shipped_data": bool(mix_shipped_data),
                "config": {k: v for k, v in asdict(config).items() if k != "network"},
                "loss_first": losses[0] if losses else None,
                "loss_last": losses[-1] if losses else None,
                "wall_clock_minutes": round(elapsed / 60, 2),
                "hardware": describe_hardware(device, threads),
                "notes": notes,
            },
            "validation": {"before": before, "after": after},
        }
        partial = Path(tempfile.mkdtemp(prefix=f".{output_model_dir.name}.partial-", dir=output_model_dir.parent))
        try:
            written = store.write_model(partial, state, manifest)
            after.update(segmentation_figures(partial, ann_validation, device))  # the model as written (half-precision weights)
            log(f"validation after: {after}")
            # the after figures join the manifest; the weights they scored are the ones kept, not written again
            store.write_manifest(partial, {**written.manifest, "validation": {"before": before, "after": after}})
            with open(run_dir / "log.jsonl", "a", encoding="utf-8") as stream:
                stream.write(json.dumps({"step": steps, "validation_before": before, "validation_after": after}) + "\n")
            shutil.copyfile(run_dir / "log.jsonl", partial / store.TRAINING_LOG)
            if output_model_dir.exists():
                output_model_dir.rmdir()  # empty (checked above)
            os.chmod(partial, imageio.default_mode(directory=True))
            os.replace(partial, output_model_dir)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        info = store.find_model(str(output_model_dir))
        store.load_network(info)  # the written model loads and its checksum holds
    if not keep_run:
        shutil.rmtree(run_dir, ignore_errors=True)
    log(f"wrote {info.label} to {info.folder} (sha256 {info.manifest['sha256'][:12]}...)")
    return FinetuneResult(
        info, before, after, losses, [r.case_id for r in train_records], [r.case_id for r in validation_records],
        time.time() - started, device.type, notes,
    )  # fmt: skip
