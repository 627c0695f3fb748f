"""Training the segmentation network on partially annotated lumbar MRI.

``spineanalysis train`` runs :func:`train`. Reproducible (fixed split and seeds), resumable (a
checkpoint holds network, optimiser, step and random states) and logged (``log.jsonl``: loss per
step window, validation Dice per class every ``validate_every`` steps, predicted with the same 1 mm
slice smoothing the exported model uses in ``spineanalysis segment``).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import InputError
from .augment import SliceAugmenter
from .classes import CHANNEL_LABELS, DISC_CLASSES, LABEL_TO_CHANNEL, VERTEBRA_CHANNELS
from .dataset import CaseRecord, TrainingCase, default_data_dir, load_training_case, load_validation_case, read_manifest, scored_prediction, split_cases, SPLIT_SEED
from .losses import partial_label_loss
from .network import NetworkConfig, build_network, gather_slices, inflate_input_channels, input_slice_offsets
from .predict import InferenceSettings, predict_volume
from .synthesis import load_synthetic_disc_cases, render


@dataclass
class TrainingConfig:
    steps: int = 3000
    batch_size: int = 8
    crop: int = 224
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 20261123  # case drawing, augmentation and initialisation
    # the validation split's seed, kept apart from ``seed`` so that a run with another sampling seed
    # is still scored on the fixed split every shipped model was validated on
    split_seed: int = SPLIT_SEED
    validation_fraction: float = 0.2
    validate_every: int = 500
    checkpoint_every: int = 100
    labelled_slice_fraction: float = 0.85
    disc_case_weight: float = 4.0  # cases with expert disc labels are drawn this much more often
    threads: int = 2
    network: dict = field(default_factory=lambda: NetworkConfig().to_dict())
    log_every: int = 25  # steps per loss line in log.jsonl
    annotated_case_weight: float = 1.0  # sampling weight of annotator-corrected cases (source "ANN", see finetune)
    source_weights: dict = field(default_factory=dict)  # extra sampling weight per data source, e.g. {"VB1": 3.0}
    freeze_batch_norm: bool = False  # keep batch-norm running statistics (fine-tuning with small batches)
    initialised_from: str = ""  # weights training started from (continued training / fine-tuning), empty: random
    # share of samples whose crop is centred on a random labelled pixel instead of the labels' centre, so
    # that the outermost levels (T10 at the top of a long field of view, S1) and the image edges get into crops
    random_centre_fraction: float = 0.0
    # share of the run after which the weights are averaged step by step (stochastic weight averaging,
    # Izmailov et al., UAI 2018) at the constant learning rate reached there; the averaged weights, with
    # batch-norm statistics measured afresh, become network.pt, the last step's network_last.pt.
    # 0: off (cosine decay to the end; network.pt is the last step's)
    average_weights_from: float = 0.0
    # scales the geometric augmentation (rotation, zoom, aspect), the resolution loss and the contrast
    # inversion of :class:`~.augment.SliceAugmenter`; below 1 for a last phase closer to the scans as
    # acquired (the intensity transforms stay as they are)
    augmentation_strength: float = 1.0
    # share of samples drawn from synthetic cases built around the label-only disc maps (SynthSeg-style,
    # :mod:`.synthesis`); 0: those maps are not used
    synthetic_disc_share: float = 0.0
    # weight of the class Dice term (body and disc class, each the union of its levels; see
    # :func:`~.losses.class_dice_loss`) added to the loss; 0: off, as for the phases up to 1.9.0
    class_dice_weight: float = 0.0
    # share of samples given Rician noise at a random SNR of 2-20 (:func:`~.augment.rician_noise`), for
    # noisier scans than the training set's; 0: off, as for the phases up to 1.10.0
    rician_noise_share: float = 0.0
    # per data source, the width (mm) of the band outside each body outline (and 1 mm inside it) that is left out
    # of the loss (:func:`~.dataset.mark_unknown_outlines`), e.g. {"VB1": 2.0} for a source whose experts outline
    # the bodies inside the cortical rim; the training-time validation still scores the expert outlines
    outline_unknown_mm: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Range checks, so that a bad value is refused in one line before any data is read."""
        for name, (low, high, high_included) in _RANGES.items():
            value = getattr(self, name)
            if not (low <= value <= high if high_included else low <= value < high):
                bound = f"between {low:g} and {high:g}" if high_included else f"at least {low:g} and below {high:g}"
                raise InputError(f"--{name.replace('_', '-')} must be {bound}, got {value:g}")
        for name in ("steps", "batch_size", "threads", "validate_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise InputError(f"--learning-rate must be above 0, got {self.learning_rate:g}")
        for source, mm in self.outline_unknown_mm.items():
            if mm < 1:  # training pixels are 1 mm: a narrower band rounds to nothing
                raise InputError(f"--outline-unknown {source}={mm:g}: the band must be at least 1 mm (one training pixel)")


#: TrainingConfig field -> (lowest, highest, highest allowed): shares of samples or of the run, and weights
_RANGES = {
    "random_centre_fraction": (0.0, 1.0, True),
    "augmentation_strength": (0.0, 1.0, True),
    "rician_noise_share": (0.0, 1.0, True),
    "synthetic_disc_share": (0.0, 1.0, False),
    "class_dice_weight": (0.0, 10.0, True),
    "average_weights_from": (0.0, 1.0, False),
}


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float | None:
    total = prediction.sum() + truth.sum()
    if truth.sum() == 0:
        return None
    return float(2 * np.logical_and(prediction, truth).sum() / total)


#: How validation inside training predicts: 1 mm slice smoothing, one scale, plain argmax (cheap, and
#: comparable from run to run); a model's own settings are applied by ``spineanalysis evaluate``.
TRAINING_VALIDATION = InferenceSettings(slice_smoothing_sigma_mm=1.0)


def predict_case(network: torch.nn.Module, case: TrainingCase, device: torch.device, settings: InferenceSettings = TRAINING_VALIDATION) -> np.ndarray:
    """The network's class map of a case, predicted with ``settings`` (see ``predict_volume``)."""
    classes, _ = predict_volume(
        network, case.image.astype(np.float32), device, slice_spacing_mm=case.slice_spacing_mm,
        smoothing_sigma_mm=settings.slice_smoothing_sigma_mm, test_time_scales=settings.test_time_scales,
        body_probability_threshold=settings.body_probability_threshold, test_time_mirror=settings.test_time_mirror,
    )  # fmt: skip
    return classes


def validation_dice(network: torch.nn.Module, cases: list[TrainingCase], device: torch.device, settings: InferenceSettings = TRAINING_VALIDATION) -> dict:
    """Dice of the vertebral-body class and the disc class (union of levels) on annotated cases.

    Scored only where the case annotates the class: disc Dice on expert disc labels only
    (cases whose source is IVD), vertebra Dice on VB cases; annotator-corrected cases (source ANN,
    from :mod:`SpineAnalysisLib.finetune`) count for both. The cases come from
    :func:`~.dataset.load_validation_case`: the expert labels as published, known label errors included.
    """
    vertebra_channels = list(VERTEBRA_CHANNELS)
    disc_channels = [LABEL_TO_CHANNEL[d] for d in DISC_CLASSES]
    scores: dict[str, list[float]] = {"vertebra": [], "disc": [], "level_exact": []}
    for case in cases:
        classes = predict_case(network, case, device, settings)
        if case.record.source.startswith("VB") or case.record.source == "ANN":
            annotated = [c for c in vertebra_channels if case.annotated[c] and c in np.unique(case.target)]
            truth = np.isin(case.target, annotated)
            predicted = scored_prediction(classes, vertebra_channels, annotated, truth)
            dice = _dice(predicted, truth)
            if dice is not None:
                scores["vertebra"].append(dice)
            exact = _dice(np.isin(classes, annotated) & (classes == case.target), truth)
            if exact is not None:
                scores["level_exact"].append(exact)
        if case.record.source in ("IVD", "ANN"):
            annotated = [c for c in disc_channels if case.annotated[c] and c in np.unique(case.target)]
            truth = np.isin(case.target, annotated)
            dice = _dice(scored_prediction(classes, disc_channels, annotated, truth), truth)
            if dice is not None:
                scores["disc"].append(dice)
    return {key: (float(np.mean(values)) if values else None) for key, values in scores.items()}


#: Share of 2.5D training samples whose input slices are slab averages (thick-slice simulation).
THICK_SLAB_PROBABILITY = 0.3


class SliceSampler:
    def __init__(self, cases: list[TrainingCase], config: TrainingConfig):
        self.cases = cases
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        weights = np.array([
            (config.disc_case_weight if c.record.source == "IVD" else config.annotated_case_weight if c.record.source == "ANN" else 1.0)
            * float(config.source_weights.get(c.record.source, 1.0))
            for c in cases
        ])
        synthetic = np.array([c.scene is not None for c in cases])
        if synthetic.any() and not synthetic.all():  # synthetic cases share synthetic_disc_share of the draws
            weights = np.where(synthetic, config.synthetic_disc_share / weights[synthetic].sum(), (1 - config.synthetic_disc_share) / weights[~synthetic].sum()) * weights
        self.weights = weights / weights.sum()
        self.augmenter = SliceAugmenter(config.crop, seed=config.seed, strength=config.augmentation_strength, rician_noise_share=config.rician_noise_share)
        self.network = NetworkConfig.from_dict(config.network)

    def input_slices(self, case: TrainingCase, index: int) -> np.ndarray:
        """The network's input for slice ``index``: (channels, rows, columns).

        A 2.5D network gets neighbours at a random distance of 0.5-2x its ``slice_context_mm``
        (1.5-6 mm for 3 mm), as the nearest slices of scans 1.5-6 mm thick would be; and in
        ``THICK_SLAB_PROBABILITY`` of samples every channel is the mean of the slab of slices that
        spacing stands for, as a thick slice averages the tissue across its thickness.
        """
        if not self.network.neighbours:
            return case.image[index][None]
        distance = self.network.slice_context_mm * float(np.exp(self.rng.uniform(np.log(0.5), np.log(2.0))))
        offsets = input_slice_offsets(self.network, case.slice_spacing_mm, distance)
        half_width = (offsets[1] - offsets[0]) // 2 if self.rng.random() < THICK_SLAB_PROBABILITY else 0
        slab = [gather_slices(case.image, [index], tuple(o + d for o in offsets))[0].astype(np.float32) for d in range(-half_width, half_width + 1)]
        return np.mean(slab, axis=0) if len(slab) > 1 else slab[0]

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, targets, annotated = [], [], []
        for _ in range(self.config.batch_size):
            case = self.cases[self.rng.choice(len(self.cases), p=self.weights)]
            if case.scene is not None:
                case = replace(case, image=render(case.scene, self.rng))
            if case.labelled_slices.size and self.rng.random() < self.config.labelled_slice_fraction:
                index = int(self.rng.choice(case.labelled_slices))
            else:
                index = int(self.rng.integers(case.image.shape[0]))
            target = case.target[index]
            rows, cols = np.nonzero(target)
            if rows.size and self.config.random_centre_fraction and self.rng.random() < self.config.random_centre_fraction:
                pick = int(self.rng.integers(rows.size))
                centre = (float(rows[pick]), float(cols[pick]))
            elif rows.size:
                centre = (float(rows.mean()), float(cols.mean()))
            else:
                centre = (target.shape[0] / 2, target.shape[1] / 2)
            image, label = self.augmenter(self.input_slices(case, index).astype(np.float32), target, centre)
            images.append(image)
            targets.append(label)
            annotated.append(torch.from_numpy(case.annotated))
        return torch.stack(images), torch.stack(targets), torch.stack(annotated)


class WeightAverage:
    """Running mean of a network's state over training steps (stochastic weight averaging).

    Floating-point parameters and buffers (batch-norm running means and variances) are averaged with
    equal weight per step; integer buffers (batch counters) are the latest step's.
    """

    def __init__(self, state: dict | None = None, count: int = 0):
        self.state = state
        self.count = count

    def update(self, network: torch.nn.Module) -> None:
        current = network.state_dict()
        self.count += 1
        if self.state is None:
            self.state = {k: v.detach().clone() for k, v in current.items()}
            return
        for key, value in current.items():
            if value.is_floating_point():
                self.state[key] += (value.detach() - self.state[key]) / self.count
            else:
                self.state[key] = value.detach().clone()


#: Training batches over which the averaged network's batch-norm statistics are measured.
BATCH_NORM_BATCHES = 100


def averaging_start_step(config: TrainingConfig) -> int | None:
    """The last step not averaged (averaging covers the steps after it), or None when averaging is off."""
    if not config.average_weights_from:
        return None
    return min(config.steps - 1, int(round(config.steps * config.average_weights_from)))


def learning_rate_factor(step: int, steps: int, warmup: int, average_after: int | None = None) -> float:
    """Share of the peak learning rate at ``step``: linear warm-up, then cosine decay to 0 at ``steps``.

    With weight averaging from step ``average_after`` the rate stays at its value there (the constant
    rate of stochastic weight averaging), so that the averaged weights come from a stretch of the
    basin rather than from the nearly frozen end of a cosine schedule.
    """
    position = step if average_after is None else min(step, average_after)
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, position / steps)))


def recompute_batch_norm(network: torch.nn.Module, batches: Callable[[], torch.Tensor], count: int, device: torch.device) -> None:
    """Batch-norm running statistics of ``network`` measured afresh over ``count`` training batches.

    Averaged weights need statistics of their own (Izmailov et al. 2018, section 3.2): the average of
    running statistics along the trajectory is not the statistics of the averaged network.
    """
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative mean over the batches
    network.train()
    with torch.no_grad():
        for _ in range(count):
            network(batches().to(device))
    for module, momentum in zip(norms, momenta):
        module.momentum = momentum
    network.eval()


def cpu_state(network: torch.nn.Module) -> dict:
    """The network's state as CPU tensors, so that weights trained on a GPU load anywhere."""
    return {k: v.detach().cpu() for k, v in network.state_dict().items()}


def _save_checkpoint(path: Path, network, optimiser, scheduler, step: int, sampler: SliceSampler, config: TrainingConfig, average: WeightAverage | None = None) -> None:
    state = {
        "network": network.state_dict(),
        "optimiser": optimiser.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "config": asdict(config),
        "sampler_rng": sampler.rng.bit_generator.state,
        "augmenter_rng": sampler.augmenter.random_states(),
        "torch_rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    if average is not None and average.state is not None:
        state["averaged_state"], state["averaged_count"] = average.state, average.count
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    temporary.replace(path)


def _load_checkpoint(path: Path) -> dict:
    """A run's checkpoint, read with ``weights_only=True``: tensors, plain containers and the uint32 arrays of the
    augmenter's MT19937 states (numpy's array reconstruction allowlisted). A file planted in a run folder (a shared
    model folder, for fine-tuning) cannot run code when the run resumes; it is refused in one line."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    allowed = [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    try:
        with torch.serialization.safe_globals(allowed):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: not a checkpoint this program wrote, not loaded ({reason[:160]}); delete its run folder to start over") from None
    if not isinstance(state, dict) or "network" not in state:
        raise InputError(f"{path}: not a checkpoint this program wrote; delete its run folder to start over")
    return state


def describe_hardware(device: torch.device, threads: int) -> str:
    """The machine a run trains on, for the model manifest (GPU name, or CPU cores and torch threads)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{os.cpu_count()}-core CPU, {threads} torch threads (no GPU)"


def train(
    output_dir: Path,
    config: TrainingConfig | None = None,
    data_dir: Path | None = None,
    log: Callable[[str], None] = print,
    case_ids: list[str] | None = None,
    records: list[CaseRecord] | None = None,
    validation_records: list[CaseRecord] | None = None,
    initial_state: dict | None = None,
) -> Path:
    """Train (or resume) into ``output_dir``; returns the path of the final network weights.

    ``records`` trains on these cases instead of the manifest of ``data_dir`` (split by
    :func:`split_cases` unless ``validation_records`` gives the validation cases). ``initial_state`` is a
    state dict to start from (fine-tuning); a checkpoint in ``output_dir`` takes precedence when resuming.
    """
    config = config or TrainingConfig()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    if records is None:
        records = read_manifest(data_dir or default_data_dir())
    if case_ids:
        records = [r for r in records if r.case_id in case_ids]
    if validation_records is None:
        train_records, validation_records = split_cases(records, config.validation_fraction, config.split_seed)
    else:
        train_records = list(records)
    started = time.time()
    train_cases = [load_training_case(r, config.outline_unknown_mm.get(r.source, 0.0)) for r in train_records]
    validation_cases = [load_validation_case(r) for r in validation_records]  # the expert labels as published
    synthetic_cases = []
    if config.synthetic_disc_share > 0:
        excluded = {r.subject_group for r in validation_records}
        synthetic_cases = load_synthetic_disc_cases(data_dir or default_data_dir(), excluded, config.seed)
        if not synthetic_cases:
            raise InputError("synthetic_disc_share > 0 but the data folder's manifest lists no label-only disc map outside the validation subjects")
        train_cases += synthetic_cases
    (output_dir / "split.json").write_text(json.dumps({
        "train": [r.case_id for r in train_records], "validation": [r.case_id for r in validation_records],
        "synthetic": [c.record.case_id for c in synthetic_cases],
    }, indent=1))  # fmt: skip
    log(
        f"loaded {len(train_cases) - len(synthetic_cases)} training, {len(validation_cases)} validation and "
        f"{len(synthetic_cases)} synthetic disc cases in {time.time() - started:.0f} s"
    )

    network = build_network(NetworkConfig.from_dict(config.network)).to(device)
    if initial_state is not None:
        initial_state = inflate_input_channels(initial_state, network)
        network.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in initial_state.items()})
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = max(1, config.steps // 30)
    average_after = averaging_start_step(config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: learning_rate_factor(s, config.steps, warmup, average_after))
    sampler = SliceSampler(train_cases, config)
    checkpoint = output_dir / "checkpoint.pt"
    step = 0
    average = WeightAverage() if average_after is not None else None
    if checkpoint.exists():
        # our own checkpoint (optimiser + RNG states); read to the CPU because the generator states must stay
        # there (torch.set_rng_state refuses a CUDA tensor); the optimiser moves its state to the parameters' device
        state = _load_checkpoint(checkpoint)
        network.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.rng.bit_generator.state = state["sampler_rng"]
        sampler.augmenter.restore_random_states(state["augmenter_rng"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available() and len(state["cuda_rng"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        step = state["step"]
        if average is not None and "averaged_state" in state:
            average = WeightAverage({k: v.to(device) for k, v in state["averaged_state"].items()}, state["averaged_count"])
        log(f"resumed from step {step}")

    log_file = (output_dir / "log.jsonl").open("a", encoding="utf-8")
    log_file.write(json.dumps({"step": step, "hardware": describe_hardware(device, config.threads)}) + "\n")
    window_losses: list[float] = []
    window_start = time.time()
    while step < config.steps:
        network.train()
        if config.freeze_batch_norm:
            for module in network.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        images, targets, annotated = sampler.batch()
        logits = network(images.to(device))
        loss = partial_label_loss(logits, targets.to(device), annotated.to(device), config.class_dice_weight)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 5.0)
        optimiser.step()
        scheduler.step()
        step += 1
        if average is not None and step > average_after:
            average.update(network)
        window_losses.append(loss.item())
        if step % max(1, config.log_every) == 0 or step == config.steps:
            record = {"step": step, "loss": float(np.mean(window_losses)), "lr": scheduler.get_last_lr()[0], "seconds_per_step": (time.time() - window_start) / len(window_losses), "elapsed_s": time.time() - started}
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            log(f"step {step}/{config.steps} loss {record['loss']:.4f} ({record['seconds_per_step']:.2f} s/step)")
            window_losses, window_start = [], time.time()
        if step % config.checkpoint_every == 0 or step == config.steps:
            _save_checkpoint(checkpoint, network, optimiser, scheduler, step, sampler, config, average)
        if validation_cases and (step % config.validate_every == 0 or step == config.steps):
            scores = validation_dice(network, validation_cases, device)
            log_file.write(json.dumps({"step": step, "validation": scores}) + "\n")
            log_file.flush()
            log(f"validation at step {step}: {scores}")
    weights = output_dir / "network.pt"
    if average is not None and average.state is not None:
        torch.save(cpu_state(network), output_dir / "network_last.pt")
        network.load_state_dict(average.state)
        if not config.freeze_batch_norm:
            recompute_batch_norm(network, lambda: sampler.batch()[0], BATCH_NORM_BATCHES, device)
        log(f"network.pt: the mean of the weights of the last {average.count} steps (network_last.pt: the last step's)")
        if validation_cases:
            scores = validation_dice(network, validation_cases, device)
            log_file.write(json.dumps({"step": step, "validation_averaged": scores, "averaged_steps": average.count}) + "\n")
            log_file.flush()
            log(f"validation of the averaged weights: {scores}")
    torch.save(cpu_state(network), weights)
    (output_dir / "training_config.json").write_text(json.dumps(asdict(config), indent=1))
    log(f"finished {config.steps} steps in {(time.time() - started) / 60:.1f} min; weights {weights}")
    return weights
