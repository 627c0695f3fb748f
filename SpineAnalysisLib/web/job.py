"""The segmentation job of the review page and what it reports.

The job is the Slicer module's background command, ``python -m SpineAnalysisLib segment IMAGE -o LABELS
--progress`` (:class:`SpineAnalysisLib.background.BackgroundProcess`). Its summary (labelling report:
levels, confidence, flags, warnings, ``levels_uncertain``) feeds :func:`SpineAnalysisLib.quality.assess`
together with the current measurements: from the ``--summary`` JSON file, otherwise (when the job wrote
none) from its printed summary lines.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from ..background import BackgroundProcess, python_command


def start_segmentation(source: Path, output: Path, summary: Path, device: str) -> BackgroundProcess:
    args = ["segment", str(source), "-o", str(output), "--device", device, "--progress", "--summary", str(summary)]
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    return BackgroundProcess(python_command("SpineAnalysisLib", *args, executable=sys.executable), env=env).start()


def parse_summary_lines(lines: Iterable[str]) -> dict:
    """The summary printed by ``segment`` (``levels: ...``, ``level confidence: C (anchor A)``, ``note: ...``).

    The printed notes mix the labelling flags and the image warnings; they are kept as flags (listed, not
    lowering the status): only the JSON summary tells them apart.
    """
    summary: dict = {"levels": [], "flags": [], "warnings": []}
    for line in lines:
        text = line.strip()
        if text.startswith("levels:"):
            summary["levels"] = [n.strip() for n in text[len("levels:"):].split(",") if n.strip() and n.strip() != "none"]
        elif text.startswith("level confidence:"):
            value = text[len("level confidence:"):].split("(")[0].strip()
            try:
                summary["confidence"] = float(value)
            except ValueError:
                pass
        elif text.startswith("note:"):
            summary["flags"].append(text[len("note:"):].strip())
    return summary


def job_summary(lines: Iterable[str], summary_path: Path | None = None) -> dict:
    """The finished job's summary: its JSON file when written, else its printed lines."""
    if summary_path is not None and summary_path.is_file():
        try:
            return json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    return parse_summary_lines(lines)
