"""The model commands: ``evaluate``, ``train``, ``export-model`` and ``models``."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..errors import InputError
from ..outputs import check_output_file
from .options import add_model_options, progress_printer

COMMANDS = ("evaluate", "train", "export-model", "models")


def add_commands(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="score a model on labelled cases (Dice, level identification, ASD, DHI agreement)")
    evaluate.add_argument("--data", help="folder with manifest.csv (default: ../shared/data/lumbar_mri)")
    evaluate.add_argument("--cases", default="validation", help="'validation' (the fixed split), 'all', or comma-separated case ids")
    evaluate.add_argument("-o", "--output", help="write the full report as JSON here")
    evaluate.add_argument(
        "--slice-thickness-mm", type=float, default=None, metavar="MM",
        help="score on thick-slice copies: each case's sagittal slices averaged into slabs this thick (e.g. 4, as clinical 2D stacks)",
    )
    add_model_options(evaluate)

    train = commands.add_parser("train", help="train the segmentation network (resumes from RUNDIR/checkpoint.pt)")
    train.add_argument("-o", "--output", required=True, help="run folder (checkpoints, log.jsonl)")
    train.add_argument("--data", help="folder with manifest.csv (default: ../shared/data/lumbar_mri)")
    train.add_argument("--steps", type=int, default=2500)
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument(
        "--seed", type=int, default=20261123,
        help="seed of case drawing, augmentation and initialisation; the validation split stays the fixed one (dataset.SPLIT_SEED)",
    )
    train.add_argument("--threads", type=int, default=2)
    train.add_argument("--learning-rate", type=float, default=2e-3, help="peak learning rate of the cosine schedule")
    train.add_argument("--disc-case-weight", type=float, default=4.0, help="how much more often cases with expert disc labels are drawn")
    train.add_argument("--validate-every", type=int, default=1250, help="steps between validation scores in log.jsonl")
    train.add_argument(
        "--source-weight", action="append", default=[], metavar="SOURCE=W",
        help="draw the cases of a data source (manifest 'source', e.g. VB1) W times as often; repeatable",
    )
    train.add_argument(
        "--outline-unknown", action="append", default=[], metavar="SOURCE=MM",
        help="leave the MM mm outside (and 1 mm inside) every body outline of a data source out of the loss, e.g. VB1=2 for outlines drawn inside the cortical rim; repeatable",
    )
    train.add_argument(
        "--random-centre-fraction", type=float, default=0.0, metavar="F",
        help="share of crops centred on a random labelled pixel instead of the labels' centre (the outermost levels and image edges get into crops)",
    )
    train.add_argument(
        "--average-weights-from", type=float, default=0.0, metavar="F",
        help="average the weights of every step after this share of the run (stochastic weight averaging), e.g. 0.5: the second half; 0: off",
    )
    train.add_argument(
        "--augmentation-strength", type=float, default=1.0, metavar="F",
        help="scale of the rotation/zoom, resolution-loss and inversion augmentation (1: as for the shipped model; e.g. 0.5 for a last, gentler phase)",
    )
    train.add_argument(
        "--synthetic-disc-share", type=float, default=0.0, metavar="F",
        help="share of samples drawn from synthetic images built around the data folder's label-only disc maps (SynthSeg-style); 0: not used",
    )
    train.add_argument(
        "--class-dice-weight", type=float, default=0.0, metavar="W",
        help="add W x the soft Dice of the whole body class and disc class (all levels together) to the loss; 0: off",
    )
    train.add_argument(
        "--rician-noise-share", type=float, default=0.0, metavar="F",
        help="share of samples given Rician noise at a random signal-to-noise ratio of 2-20 (noisier scans than the training set's); 0: off",
    )
    train.add_argument(
        "--slice-context-mm", type=float, default=0.0, metavar="MM",
        help="2.5D: feed each sagittal slice with neighbours this far apart (0: plain 2D); an --init-from model fed fewer slices is widened",
    )
    train.add_argument(
        "--context-slices", type=int, default=1, metavar="K",
        help="2.5D: neighbours fed on either side of each slice, --slice-context-mm apart (default 1: the slices 1x that distance away; 2: also 2x)",
    )
    train.add_argument(
        "--init-from", help="start from these weights: a model name or folder (checksum verified) or a run's network.pt (continued training)"
    )

    export = commands.add_parser(
        "export-model",
        help="turn a training run into a model folder (weights, checksum, manifest), or give a model new inference settings",
    )
    export.add_argument(
        "run", help="training run folder; or a model folder (with manifest.json): a new version with the same weights and the given inference settings"
    )
    export.add_argument("-o", "--output", required=True, help="model folder to write")
    export.add_argument("--name", default="spine-mri-2d")
    export.add_argument("--version", default="1.0.0")
    export.add_argument("--evaluation", help="JSON written by 'spineanalysis evaluate -o', stored as validation metrics")
    export.add_argument("--fast-evaluation", help="JSON written by 'spineanalysis evaluate --fast -o', stored as validation_fast")
    export.add_argument("--calibration", help="JSON written by 'Testing/DataChecks/calibrate_inference.py -o', stored as inference_calibration")
    export.add_argument("--slice-smoothing-mm", type=float, default=1.0, help="Gaussian width (mm) for averaging neighbouring slices' probabilities; 0: off")
    export.add_argument("--test-time-scales", default="1", help="comma-separated in-plane zooms whose probabilities are averaged, e.g. 0.9,1,1.1")
    export.add_argument("--body-threshold", type=float, default=0.0, help="summed body probability a voxel needs to be vertebral body; 0: plain argmax")
    export.add_argument("--test-time-mirror", action="store_true", help="also run on the left-right mirrored volume and average (twice the network's work)")
    export.add_argument("--earlier-minutes", type=float, default=0.0, help="training minutes behind the weights file a run continued from (a model's history is carried over by itself)")
    export.add_argument("--change", default="", help="what this training phase did differently, kept in the manifest's training phases")

    commands.add_parser("models", help="list available models (one whose weights fail their checksum is marked UNUSABLE)")


def run(args: argparse.Namespace) -> int:
    from .. import imageio

    if args.command == "evaluate":
        if args.output:
            check_output_file(args.output, overwrite=True)  # a folder or an unwritable place: refused before the scoring
        from ..evaluation import evaluate_model, format_report

        report = evaluate_model(data_dir=args.data, cases=args.cases, model_name=args.model, device=args.device, progress=progress_printer(args.progress), fast=args.fast,
                                slice_thickness_mm=args.slice_thickness_mm)
        print(format_report(report))
        if args.output:
            imageio.write_text(json.dumps(report, indent=1), args.output)
        return 0
    if args.command == "train":
        from ..model.training import TrainingConfig, train

        from ..model.store import initial_weights

        config = TrainingConfig(  # checks its own ranges
            steps=args.steps, batch_size=args.batch_size, seed=args.seed, threads=args.threads,
            learning_rate=args.learning_rate, validate_every=args.validate_every,
            disc_case_weight=args.disc_case_weight, initialised_from=args.init_from or "",
            source_weights=_parse_source_values(args.source_weight, "--source-weight", "VB1=3"), random_centre_fraction=args.random_centre_fraction,
            average_weights_from=args.average_weights_from, augmentation_strength=args.augmentation_strength,
            synthetic_disc_share=args.synthetic_disc_share, class_dice_weight=args.class_dice_weight,
            rician_noise_share=args.rician_noise_share, outline_unknown_mm=_parse_source_values(args.outline_unknown, "--outline-unknown", "VB1=2"),
            **_network_option(args.slice_context_mm, args.context_slices),
        )
        initial_state = initial_weights(args.init_from) if args.init_from else None
        train(Path(args.output), config, data_dir=Path(args.data) if args.data else None, initial_state=initial_state)
        return 0
    if args.command == "export-model":
        from ..model.predict import InferenceSettings
        from ..model.store import MANIFEST, export_run, find_model, retune_model

        evaluation = _read_export_json(args.evaluation) if args.evaluation else None
        fast_evaluation = _read_export_json(args.fast_evaluation) if args.fast_evaluation else None
        calibration = _read_export_json(args.calibration, "calibration", "'Testing/DataChecks/calibrate_inference.py -o'", "mean_body_dice") if args.calibration else None
        try:
            scales = tuple(float(v) for v in args.test_time_scales.split(",") if v.strip())
            settings = InferenceSettings(args.slice_smoothing_mm, scales, args.body_threshold, args.test_time_mirror).validated()
        except ValueError as error:
            raise InputError(f"export-model: {error}") from None
        if (Path(args.run) / MANIFEST).is_file():
            if not args.change:
                raise InputError("export-model: a model folder gets new inference settings only with --change saying what changed")
            info = retune_model(find_model(args.run), Path(args.output), args.version, settings, args.change, evaluation, fast_evaluation, calibration)
        else:
            info = export_run(Path(args.run), Path(args.output), args.name, args.version, evaluation, settings, args.earlier_minutes, args.change, fast_evaluation, calibration)
        print(f"wrote {info.label} to {info.folder} (sha256 {info.manifest['sha256']})")
        return 0
    if args.command == "models":
        from ..model.store import list_models, weights_problem

        for info in list_models():
            metrics = info.manifest.get("validation", {})
            problem = weights_problem(info)  # listed all the same (its folder is where to look), but never as usable
            print(f"{info.label}\t{info.folder}\t{json.dumps(metrics)}" + (f"\tUNUSABLE: {problem}" if problem else ""))
        return 0
    raise AssertionError(args.command)


def _network_option(slice_context_mm: float, context_slices: int = 1) -> dict:
    """TrainingConfig arguments for ``--slice-context-mm`` and ``--context-slices`` (nothing for plain 2D)."""
    if slice_context_mm < 0:
        raise InputError(f"--slice-context-mm must be >= 0, got {slice_context_mm}")
    if not 1 <= context_slices <= 4:
        raise InputError(f"--context-slices must be 1 to 4 neighbours on either side, got {context_slices}")
    if not slice_context_mm:
        if context_slices != 1:
            raise InputError("--context-slices needs --slice-context-mm (the distance between the slices fed)")
        return {}
    from ..model.network import NetworkConfig

    return {"network": NetworkConfig(in_channels=1 + 2 * context_slices, slice_context_mm=slice_context_mm).to_dict()}


def _parse_source_values(items: list[str], option: str, example: str) -> dict[str, float]:
    """``SOURCE=NUMBER`` items of a repeatable option -> {source: number}, each number finite and above 0."""
    values = {}
    for item in items:
        source, _, value = item.partition("=")
        try:
            values[source.strip()] = float(value)
        except ValueError:
            raise InputError(f"{option} {item!r}: expected SOURCE=NUMBER, e.g. {example}") from None
        if not source.strip() or not values[source.strip()] > 0 or not math.isfinite(values[source.strip()]):
            raise InputError(f"{option} {item!r}: expected a source name and a finite positive number")
    return values


def _read_export_json(path: str, what: str = "evaluation", written_by: str = "'spineanalysis evaluate -o'", key: str = "summary") -> dict:
    """An ``evaluate -o`` JSON file (or another with a ``key`` section), or an InputError that names the file and the problem."""
    try:
        evaluation = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"export-model: cannot read the {what} {path} ({type(error).__name__}: {error})") from None
    if not isinstance(evaluation, dict) or not isinstance(evaluation.get(key), dict):
        raise InputError(f"export-model: {path} is not the JSON of {written_by} (no {key})")
    return evaluation
