"""``spineanalysis``: the command-line entry point.

    spineanalysis analyze IMAGE -o OUTDIR        segment + measure + report (the usual command)
    spineanalysis segment IMAGE -o LABELS.nii.gz  label map on the image grid
    spineanalysis measure IMAGE LABELS -o OUTDIR  measurements.csv / .json from a label map
    spineanalysis evaluate [--data DIR]           score a model on labelled cases
    spineanalysis train -o RUNDIR                 train from ../shared/data/lumbar_mri
    spineanalysis export-model RUNDIR -o FOLDER   weights + checksum + manifest from a run
    spineanalysis export-model MODEL -o FOLDER --change ...   same weights, new inference settings
    spineanalysis models                          list available models
    spineanalysis batch INPUT -o OUTDIR           a cohort on Dask, resumable (docs/batch.md)
    spineanalysis cohort-report OUTDIR            rebuild a batch's cohort table and report.html
    spineanalysis export-training IMAGE LABELS -o DATASET   corrected case -> training dataset folder
    spineanalysis finetune DATASET -o MODELDIR    fine-tune a model on such a folder (new model version)
    spineanalysis dicom-seg DICOM LABELS -o SEG.dcm   DICOM SEG (--read SEG.dcm REFERENCE -o LABELS)
    spineanalysis export-measurements IMAGE LABELS -o CSV   measurements with DICOM study/series UIDs

Errors in the input are printed as one line (``spineanalysis: error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import InputError, SpineAnalysisError


def _progress_printer(enabled: bool):
    def report(fraction: float, message: str) -> None:
        if enabled:
            print(f"progress: {fraction:.3f} {message}", flush=True)

    return report


def _add_subject_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sex", choices=["F", "M"], help="patient sex, for normative z-scores")
    parser.add_argument("--age", type=float, help="patient age in years, for normative z-scores")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model name, name@version or model folder (default: the shipped model)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="auto: CUDA, then MPS, then CPU")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--fast", action="store_true", help="one scale instead of the model's test-time zooms (about 3x faster on a CPU, slightly less accurate)")
    parser.add_argument("--progress", action="store_true", help="print 'progress: FRACTION MESSAGE' lines (for Slicer and scripts)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spineanalysis", description="Spine MRI segmentation, level labelling and measurements.")
    commands = parser.add_subparsers(dest="command", required=True)

    analyze = commands.add_parser("analyze", help="segment + measure + report.png")
    analyze.add_argument("image", help="NIfTI/NRRD/MHA file or DICOM series folder")
    analyze.add_argument("-o", "--output", required=True, help="output folder")
    _add_model_options(analyze)
    _add_subject_options(analyze)

    segment = commands.add_parser("segment", help="write the label map of an image")
    segment.add_argument("image")
    segment.add_argument("-o", "--output", required=True, help="label map file (.nii.gz, .nrrd, ...)")
    _add_model_options(segment)

    measure = commands.add_parser("measure", help="measure an existing label map")
    measure.add_argument("image")
    measure.add_argument("labels")
    measure.add_argument("-o", "--output", required=True, help="output folder")
    _add_subject_options(measure)

    evaluate = commands.add_parser("evaluate", help="score a model on labelled cases (Dice, level identification, ASD, DHI agreement)")
    evaluate.add_argument("--data", help="folder with manifest.csv (default: ../shared/data/lumbar_mri)")
    evaluate.add_argument("--cases", default="validation", help="'validation' (the fixed split), 'all', or comma-separated case ids")
    evaluate.add_argument("-o", "--output", help="write the full report as JSON here")
    evaluate.add_argument(
        "--slice-thickness-mm", type=float, default=None, metavar="MM",
        help="score on thick-slice copies: each case's sagittal slices averaged into slabs this thick (e.g. 4, as clinical 2D stacks)",
    )
    _add_model_options(evaluate)

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

    commands.add_parser("models", help="list available models")
    from .batch.cli import add_commands as _add_batch_commands

    _add_batch_commands(commands)
    from .interop_cli import add_commands as _add_interop_commands

    _add_interop_commands(commands)
    return parser


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
    from .model.network import NetworkConfig

    return {"network": NetworkConfig(in_channels=1 + 2 * context_slices, slice_context_mm=slice_context_mm).to_dict()}


def _parse_source_weights(items: list[str]) -> dict[str, float]:
    weights = {}
    for item in items:
        source, _, weight = item.partition("=")
        try:
            weights[source.strip()] = float(weight)
        except ValueError:
            raise InputError(f"--source-weight {item!r}: expected SOURCE=NUMBER, e.g. VB1=3") from None
        if not source.strip() or weights[source.strip()] <= 0:
            raise InputError(f"--source-weight {item!r}: expected a source name and a positive weight")
    return weights


def _read_export_json(path: str, what: str = "evaluation", written_by: str = "'spineanalysis evaluate -o'", key: str = "summary") -> dict:
    """An ``evaluate -o`` JSON file (or another with a ``key`` section), or an InputError that names the file and the problem."""
    try:
        evaluation = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"export-model: cannot read the {what} {path} ({type(error).__name__}: {error})") from None
    if not isinstance(evaluation, dict) or not isinstance(evaluation.get(key), dict):
        raise InputError(f"export-model: {path} is not the JSON of {written_by} (no {key})")
    return evaluation


def _run(args: argparse.Namespace) -> int:
    from . import imageio

    if args.command == "segment":
        from .inference import segment_image

        image = imageio.read_image(args.image)
        result = segment_image(image, args.model, args.device, _progress_printer(args.progress), threads=args.threads, fast=args.fast)
        imageio.write_image(result.label_map, args.output)
        _print_summary(result.summary())
        return 0
    if args.command == "measure":
        from .measurements import measure_case, write_measurements

        image = imageio.read_image(args.image)
        label_map = imageio.read_label_map(args.labels, reference=image)
        measurements = measure_case(image, label_map, sex=args.sex, age=args.age)
        csv_path, _ = write_measurements(measurements, args.output)
        print(f"wrote {csv_path}")
        return 0
    if args.command == "analyze":
        from .pipeline import analyze

        outputs = analyze(args.image, args.output, model=args.model, device=args.device, sex=args.sex, age=args.age, progress=_progress_printer(args.progress), threads=args.threads, fast=args.fast)
        for name, path in outputs.items():
            print(f"{name}: {path}")
        return 0
    if args.command == "evaluate":
        from .evaluation import evaluate_model, format_report

        report = evaluate_model(data_dir=args.data, cases=args.cases, model_name=args.model, device=args.device, progress=_progress_printer(args.progress), fast=args.fast,
                                slice_thickness_mm=args.slice_thickness_mm)
        print(format_report(report))
        if args.output:
            imageio.write_text(json.dumps(report, indent=1), args.output)
        return 0
    if args.command == "train":
        from .model.training import TrainingConfig, train

        from .model.store import initial_weights

        if not 0.0 <= args.random_centre_fraction <= 1.0:
            raise InputError(f"--random-centre-fraction must be between 0 and 1, got {args.random_centre_fraction:g}")
        if not 0.0 <= args.augmentation_strength <= 1.0:
            raise InputError(f"--augmentation-strength must be between 0 and 1, got {args.augmentation_strength:g}")
        if not 0.0 <= args.synthetic_disc_share < 1.0:
            raise InputError(f"--synthetic-disc-share must be at least 0 and below 1, got {args.synthetic_disc_share:g}")
        if not 0.0 <= args.class_dice_weight <= 10.0:
            raise InputError(f"--class-dice-weight must be between 0 and 10, got {args.class_dice_weight:g}")
        if not 0.0 <= args.average_weights_from < 1.0:
            raise InputError(f"--average-weights-from must be at least 0 and below 1, got {args.average_weights_from:g}")
        config = TrainingConfig(
            steps=args.steps, batch_size=args.batch_size, seed=args.seed, threads=args.threads,
            learning_rate=args.learning_rate, validate_every=args.validate_every,
            disc_case_weight=args.disc_case_weight, initialised_from=args.init_from or "",
            source_weights=_parse_source_weights(args.source_weight), random_centre_fraction=args.random_centre_fraction,
            average_weights_from=args.average_weights_from, augmentation_strength=args.augmentation_strength,
            synthetic_disc_share=args.synthetic_disc_share, class_dice_weight=args.class_dice_weight, **_network_option(args.slice_context_mm, args.context_slices),
        )
        initial_state = initial_weights(args.init_from) if args.init_from else None
        train(Path(args.output), config, data_dir=Path(args.data) if args.data else None, initial_state=initial_state)
        return 0
    if args.command == "export-model":
        from .model.predict import InferenceSettings
        from .model.store import MANIFEST, export_run, find_model, retune_model

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
    from .batch.cli import COMMANDS as BATCH_COMMANDS
    from .interop_cli import COMMANDS as INTEROP_COMMANDS

    if args.command in BATCH_COMMANDS:
        from .batch.cli import run as _run_batch_command

        return _run_batch_command(args)
    if args.command in INTEROP_COMMANDS:
        from .interop_cli import run as _run_interop_command

        return _run_interop_command(args)
    if args.command == "models":
        from .model.store import list_models

        for info in list_models():
            metrics = info.manifest.get("validation", {})
            print(f"{info.label}\t{info.folder}\t{json.dumps(metrics)}")
        return 0
    raise AssertionError(args.command)


def _print_summary(summary: dict) -> None:
    print(f"levels: {', '.join(summary['levels']) or 'none'}")
    print(f"level confidence: {summary['confidence']:.2f} (anchor {summary['anchor'] or '-'})")
    for flag in summary["flags"] + summary["warnings"]:
        print(f"note: {flag}")
    print(f"{summary['seconds']:.1f} s on {summary['device']} with {summary['model']}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except SpineAnalysisError as error:
        print(f"spineanalysis: error: {error}", file=sys.stderr)
        return 2
    except InterruptedError:
        print("spineanalysis: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("spineanalysis: interrupted", file=sys.stderr)
        return 130
