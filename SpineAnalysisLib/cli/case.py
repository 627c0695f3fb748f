"""The per-case commands: ``analyze`` (segment + measure + report), ``segment`` and ``measure``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..label_schemes import SCHEMES
from .options import add_model_options, add_subject_options, progress_printer

COMMANDS = ("analyze", "segment", "measure")


def add_commands(commands) -> None:
    analyze = commands.add_parser("analyze", help="segment + measure + report.png")
    analyze.add_argument("image", help="NIfTI/NRRD/MHA file or DICOM series folder")
    analyze.add_argument("-o", "--output", required=True, help="output folder")
    add_model_options(analyze)
    add_subject_options(analyze)

    segment = commands.add_parser("segment", help="write the label map of an image")
    segment.add_argument("image")
    segment.add_argument("-o", "--output", required=True, help="label map file (.nii.gz, .nrrd, ...)")
    add_model_options(segment)

    measure = commands.add_parser("measure", help="measure an existing label map (ours, TotalSegmentator, VerSe/TPTBox, SPINEPS; MRI or CT)")
    measure.add_argument("image", help="the MRI or CT the label map was made on")
    measure.add_argument("labels")
    measure.add_argument("-o", "--output", required=True, help="output folder")
    measure.add_argument("--label-scheme", default="auto", choices=list(SCHEMES),
                         help="numbering of LABELS (docs/label-schemes.md); auto: recognised from the label values")
    measure.add_argument("--bodies", metavar="BODY_MAP",
                         help="vertebral bodies for a whole-vertebra map: TotalSegmentator vertebrae_body, or a TPTBox/SPINEPS sub-region map")
    add_subject_options(measure)


def run(args: argparse.Namespace) -> int:
    from .. import imageio

    if args.command == "segment":
        from ..inference import segment_image

        image = imageio.read_image(args.image)
        result = segment_image(image, args.model, args.device, progress_printer(args.progress), threads=args.threads, fast=args.fast)
        imageio.write_image(result.label_map, args.output)
        print_summary(result.summary())
        return 0
    if args.command == "measure":
        from ..measure_segmentation import measure_files

        result = measure_files(args.image, args.labels, args.output, label_scheme=args.label_scheme, bodies_path=args.bodies, sex=args.sex, age=args.age)
        for line in result.lines():
            print(line)
        print(f"wrote {Path(args.output) / 'measurements.csv'}")
        return 0
    if args.command == "analyze":
        from ..pipeline import analyze

        outputs = analyze(args.image, args.output, model=args.model, device=args.device, sex=args.sex, age=args.age,
                          progress=progress_printer(args.progress), threads=args.threads, fast=args.fast)
        for name, path in outputs.items():
            print(f"{name}: {path}")
        return 0
    raise AssertionError(args.command)


def print_summary(summary: dict) -> None:
    print(f"levels: {', '.join(summary['levels']) or 'none'}")
    print(f"level confidence: {summary['confidence']:.2f} (anchor {summary['anchor'] or '-'})")
    for flag in summary["flags"] + summary["warnings"]:
        print(f"note: {flag}")
    print(f"{summary['seconds']:.1f} s on {summary['device']} with {summary['model']}")
