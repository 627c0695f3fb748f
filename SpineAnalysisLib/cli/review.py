"""``spineanalysis review [IMAGE [LABELS]]``: the browser review page (SpineAnalysisLib.web, needs trame-slicer)."""

from __future__ import annotations

import argparse

COMMANDS = ("review",)


def add_commands(commands) -> None:
    from ..web.command import add_arguments

    add_arguments(commands.add_parser("review", help="review and correct a segmentation in the browser (make web)"))


def run(args: argparse.Namespace) -> int:
    from ..web.command import run as serve

    return serve(args)
