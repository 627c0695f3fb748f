"""Options shared by several commands, and the one list of devices.

:data:`DEVICES` (defined in :mod:`SpineAnalysisLib.settings`) is the single list of ``--device`` values;
the Slicer module's parameter node imports it (from here or from ``settings``) rather than keeping a copy.
"""

from __future__ import annotations

import argparse

from ..background import format_progress
from ..label_schemes import SCHEMES
from ..settings import DEFAULT_DEVICE, DEVICES

__all__ = ["DEFAULT_DEVICE", "DEVICES", "add_device_option", "add_label_scheme_options", "add_model_options", "add_overwrite_option", "add_subject_options", "progress_printer"]


def progress_printer(enabled: bool):
    def report(fraction: float, message: str) -> None:
        if enabled:
            print(format_progress(fraction, message), flush=True)

    return report


def add_subject_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sex", choices=["F", "M"], help="patient sex, for normative z-scores")
    parser.add_argument("--age", type=float, help="patient age in years, for normative z-scores")


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run at the output path")


DEVICE_HELP = "auto: CUDA, then MPS, then CPU"


def add_device_option(parser: argparse.ArgumentParser, help: str = DEVICE_HELP) -> None:
    parser.add_argument("--device", default=DEFAULT_DEVICE, choices=list(DEVICES), help=help)


def add_model_options(parser: argparse.ArgumentParser, *, device_help: str = DEVICE_HELP, threads_help: str = "CPU threads for torch",
                      progress: bool = True) -> None:
    """``--model``, ``--device``, ``--threads``, ``--fast`` and (``progress``) ``--progress``; ``batch`` words
    ``--device`` and ``--threads`` per worker and has no ``--progress``."""
    parser.add_argument("--model", help="model name, name@version or model folder (default: the shipped model)")
    add_device_option(parser, help=device_help)
    parser.add_argument("--threads", type=int, help=threads_help)
    parser.add_argument("--fast", action="store_true", help="deprecated: runs the default settings (kept so old commands still work; it used to change clinical answers)")
    if progress:
        parser.add_argument("--progress", action="store_true", help="print 'progress: FRACTION MESSAGE' lines (for Slicer and scripts)")


def add_label_scheme_options(parser: argparse.ArgumentParser) -> None:
    """``--label-scheme`` and ``--bodies`` for a command reading a LABELS map of another tool (measure, review)."""
    parser.add_argument("--label-scheme", default="auto", choices=list(SCHEMES),
                        help="numbering of LABELS (docs/label-schemes.md); auto: recognised from the label values")
    parser.add_argument("--bodies", metavar="BODY_MAP",
                        help="vertebral bodies for a whole-vertebra map: TotalSegmentator vertebrae_body, or a TPTBox/SPINEPS sub-region map")
