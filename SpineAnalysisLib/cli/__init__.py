"""``spineanalysis``: the command-line entry point.

    spineanalysis analyze IMAGE -o OUTDIR        segment + measure + report (the usual command)
    spineanalysis segment IMAGE -o LABELS.nii.gz  label map on the image grid (--summary RESULT.json)
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
    spineanalysis review [IMAGE [LABELS]]         review and correct in the browser (docs/web.md)

Errors in the input are printed as one line (``spineanalysis: error: ...``) with exit status 2, before any
model runs: arguments are checked by the settings classes (:mod:`SpineAnalysisLib.settings`), output paths by
:mod:`SpineAnalysisLib.outputs` (an existing result is replaced only with ``--overwrite``), input files by
:func:`SpineAnalysisLib.imageio.read_scan` (damaged files, a label map given as the image).

Machine-readable output, for the Slicer module and scripts:

- ``segment IMAGE -o LABELS --summary RESULT.json`` writes the result as one JSON object: the keys of
  ``analyze``'s ``summary.json`` (``levels``, ``confidence``, ``anchor``, ``flags``, ``removed_islands``,
  ``warnings``, ``model``, ``device``, ``seconds``) plus ``image`` and ``labels`` (absolute paths).
- ``--progress`` prints one line per step, in the one progress format::

      progress: <fraction 0..1, four decimals> <message>

  written by :func:`SpineAnalysisLib.background.format_progress` and read back by
  :func:`SpineAnalysisLib.background.parse_line` (``BackgroundProcess`` turns each into a ``ProgressEvent``).

One module per command group, each with ``COMMANDS``, ``add_commands(subparsers)`` and ``run(args)``:
:mod:`.case` (analyze, segment, measure), :mod:`.models` (evaluate, train, export-model, models),
:mod:`.batch` (batch, cohort-report), :mod:`.interop` (export-training, finetune, dicom-seg,
export-measurements). Options used by several commands, and the one list of devices, are in :mod:`.options`.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import SpineAnalysisError
from . import batch, case, interop, models, review

#: Command groups in the order their commands appear in ``--help``.
GROUPS = (case, models, batch, interop, review)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spineanalysis", description="Spine MRI segmentation, level labelling and measurements.")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(commands)
    return parser


def _run(args: argparse.Namespace) -> int:
    for group in GROUPS:
        if args.command in group.COMMANDS:
            return group.run(args)
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    # Before torch loads its OpenMP runtime (read once, at load; no command module imports torch at import time): a
    # torch thread waiting for its partner sleeps instead of spinning. With the default (spinning), a program holding
    # one of two cores makes a 2-thread run 2-3 times slower (2026-12-06, 2-core machine at load 4-5: analyze VB2_09
    # 33.6-34.2 s spinning, 13.7-15.5 s passive; VB3_01 22.7-25.4 against 7.8-8.4 s; quiet, passive costs up to
    # 10-20 %: VB2_09 10.9-11.9 s against 9.9 s; README "Speed and memory"). A user's own OMP_WAIT_POLICY is kept.
    # Set here, not at import: the Slicer module imports cli.options into Slicer's own process, whose environment
    # (and so every other extension's torch subprocess) must stay as the user left it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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
