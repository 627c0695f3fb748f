"""The per-case commands: ``analyze`` (segment + measure + report), ``segment`` and ``measure``.

Each command checks everything it was given before any model runs (the arguments through the settings
classes, the output path through :mod:`SpineAnalysisLib.outputs`, the input file through
:func:`SpineAnalysisLib.imageio.read_scan`), so a mistake costs one line and exit status 2, not a minute of
inference and a traceback.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..heap import keep_freed_memory
from ..outputs import LABEL_MAP_SUFFIXES, check_output_file, check_output_folder
from ..settings import RunSettings, Subject
from .options import add_label_scheme_options, add_model_options, add_overwrite_option, add_subject_options, progress_printer

COMMANDS = ("analyze", "segment", "measure")


def add_commands(commands) -> None:
    analyze = commands.add_parser("analyze", help="segment + measure + report.png")
    analyze.add_argument("image", help="NIfTI/NRRD/MHA file or DICOM series folder")
    analyze.add_argument("-o", "--output", required=True, help="output folder (a new one, or an earlier run's with --overwrite)")
    add_model_options(analyze)
    add_subject_options(analyze)
    add_overwrite_option(analyze)

    segment = commands.add_parser("segment", help="write the label map of an image")
    segment.add_argument("image")
    segment.add_argument("-o", "--output", required=True, help="label map file: " + ", ".join(LABEL_MAP_SUFFIXES))
    segment.add_argument(
        "--summary", metavar="PATH",
        help="also write the result as JSON (levels, confidence, anchor, flags, warnings, model, device, seconds, image, labels)",
    )
    add_model_options(segment)
    add_overwrite_option(segment)

    measure = commands.add_parser("measure", help="measure an existing label map (ours, TotalSegmentator, VerSe/TPTBox, SPINEPS; MRI or CT)")
    measure.add_argument("image", help="the MRI or CT the label map was made on")
    measure.add_argument("labels")
    measure.add_argument("-o", "--output", required=True, help="output folder (a new one, or an earlier run's with --overwrite)")
    add_label_scheme_options(measure)
    add_subject_options(measure)
    add_overwrite_option(measure)


def run(args: argparse.Namespace) -> int:
    return {"analyze": _analyze, "segment": _segment, "measure": _measure}[args.command](args)


def _run_settings(args: argparse.Namespace) -> RunSettings:
    return RunSettings(model=args.model, device=args.device, threads=args.threads, fast=args.fast)


def _check_device(settings: RunSettings) -> None:
    """Refuse a device this machine lacks (``--device cuda`` without a GPU); imports torch, so it comes after
    the cheap checks."""
    from ..inference import pick_device

    pick_device(settings.device)


def _segment(args: argparse.Namespace) -> int:
    from .. import imageio

    settings = _run_settings(args)
    check_output_file(args.output, LABEL_MAP_SUFFIXES, args.overwrite, what="label map", inputs=(args.image,))
    if args.summary:
        check_output_file(args.summary, (".json",), args.overwrite, option="--summary", what="summary")
    image = imageio.read_scan(args.image)
    _check_device(settings)
    keep_freed_memory()
    from ..inference import segment_image

    result = segment_image(image, settings.model, settings.device, progress_printer(args.progress), threads=settings.threads, fast=settings.fast)
    labels = imageio.write_image(result.label_map, args.output)
    summary = result.summary()
    if args.summary:
        record = {**summary, "image": str(Path(args.image).absolute()), "labels": str(labels.absolute())}
        imageio.write_text(json.dumps(record, indent=1) + "\n", args.summary)
    print_summary(summary)
    return 0


def _measure(args: argparse.Namespace) -> int:
    subject = Subject(args.sex, args.age)
    check_output_folder(args.output, args.overwrite)
    from ..measure_segmentation import measure_files

    result = measure_files(args.image, args.labels, args.output, label_scheme=args.label_scheme, bodies_path=args.bodies, sex=subject.sex, age=subject.age)
    for line in result.lines():
        print(line)
    print(f"wrote {Path(args.output) / 'measurements.csv'}")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from .. import imageio

    subject = Subject(args.sex, args.age)
    settings = _run_settings(args)
    check_output_folder(args.output, args.overwrite)
    image = imageio.read_scan(args.image)
    imageio.check_finite(image, args.image)  # (again in pipeline.analyze, which imports torch)
    _check_device(settings)
    keep_freed_memory()
    from ..pipeline import analyze

    outputs = analyze(args.image, args.output, model=settings.model, device=settings.device, sex=subject.sex, age=subject.age,
                      progress=progress_printer(args.progress), threads=settings.threads, fast=settings.fast, image=image)
    for name, path in outputs.items():
        print(f"{name}: {path}")
    from ..quality import banner_text

    quality = json.loads(Path(outputs["summary"]).read_text(encoding="utf-8")).get("quality") or {}
    if quality.get("status"):
        print(banner_text(quality["status"], quality.get("reasons", [])))
    return 0


def print_summary(summary: dict) -> None:
    print(f"levels: {', '.join(summary['levels']) or 'none'}")
    print(f"level confidence: {summary['confidence']:.2f} (anchor {summary['anchor'] or '-'})")
    for flag in summary["flags"] + summary["warnings"]:
        print(f"note: {flag}")
    print(f"{summary['seconds']:.1f} s on {summary['device']} with {summary['model']}")
