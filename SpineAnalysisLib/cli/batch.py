"""The cohort commands: ``batch`` and ``cohort-report`` (the work itself is in :mod:`SpineAnalysisLib.batch`)."""

from __future__ import annotations

import argparse
import sys

from .options import add_model_options

COMMANDS = ("batch", "cohort-report")


def add_commands(commands) -> None:
    batch = commands.add_parser(
        "batch", help="segment + measure a cohort on Dask (resumable); cohort table, normative flags, HTML reports",
        description="Run analyze on every case of INPUT in parallel (a local Dask cluster, or --scheduler), resumably: a rerun "
                    "skips finished cases. Exit status 0 when every case finished, 1 when some failed (see OUTDIR/errors.csv).")
    batch.add_argument("input", help="folder of NIfTI/NRRD/MHA files and DICOM series folders (searched recursively), or a CSV "
                                     "with columns case_id,path[,age,sex]")
    batch.add_argument("-o", "--output", required=True, help="output folder (cases/, measurements.parquet/.csv, errors.csv, report.html)")
    batch.add_argument("--scheduler", help="address of an existing Dask scheduler (tcp://HOST:8786, or a scheduler JSON file); default: a "
                                           "local cluster on 127.0.0.1")
    batch.add_argument("--workers", type=int, help="local worker processes (default: one per CPU core, memory permitting)")
    add_model_options(batch, device_help="per worker; auto: its GPU if it has one", progress=False,
                      threads_help="torch threads per worker (default locally: cores / workers; on a cluster: the worker's "
                                   "OMP_NUM_THREADS, 1 under dask)")
    batch.add_argument("--pattern", help="only files/series folders whose name matches this glob, e.g. '*_T2w.nii.gz'")
    batch.add_argument("--skip-failed", action="store_true", help="do not retry cases that failed in an earlier run")
    _add_cohort_options(batch)
    batch.add_argument("--quiet", action="store_true", help="no progress line")

    report = commands.add_parser("cohort-report", help="rebuild the cohort table, normative comparison and report.html of a batch folder",
                                 description="Rebuild OUTDIR/measurements.*, normative.*, errors.csv and report.html from the per-case "
                                             "outputs (runs nothing; also while a batch is running elsewhere, for a snapshot).")
    report.add_argument("outdir", help="output folder of 'spineanalysis batch'")
    _add_cohort_options(report)
    report.add_argument("--include-flagged-cases", action="store_true",
                        help="count cases whose quality status is 'review' or 'failed' in the normative comparison and the report's "
                             "statistics too (default: they are listed first and left out)")


def _add_cohort_options(parser: argparse.ArgumentParser) -> None:
    from ..batch.normative import MIN_REFERENCE_N, REFERENCES

    parser.add_argument("--min-reference-n", type=int, default=MIN_REFERENCE_N,
                        help=f"cohort percentiles are used for a level/sex/age-band stratum with at least this many discs (default {MIN_REFERENCE_N})")
    parser.add_argument("--reference", choices=REFERENCES, default="auto",
                        help="reference of the 'low for age' flag: auto = cohort when large enough, else the project's healthy reference")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML cohort report")


def run(args: argparse.Namespace) -> int:
    if args.command == "cohort-report":
        from ..batch.cohort import rebuild_cohort

        outputs = rebuild_cohort(args.outdir, min_reference_n=args.min_reference_n, reference=args.reference, report=not args.no_report,
                                 include_flagged=args.include_flagged_cases)
        for name, path in outputs.items():
            print(f"{name}: {path}")
        return 0
    from ..batch.runner import run_batch

    try:
        result = run_batch(args.input, args.output, scheduler=args.scheduler, workers=args.workers, threads=args.threads, model=args.model,
                           device=args.device, fast=args.fast, pattern=args.pattern, retry_failed=not args.skip_failed, min_reference_n=args.min_reference_n,
                           reference=args.reference, report=not args.no_report, progress=None if args.quiet else sys.stderr)
    except KeyboardInterrupt:
        print("spineanalysis: batch interrupted; finished cases are kept, run the same command again to resume", file=sys.stderr)
        return 130
    rate = f", {result.cases_per_hour:.0f} cases/h" if result.cases_per_hour else ""
    quality = ", ".join(f"{result.qualities.get(status, 0)} {status}" for status in ("ok", "review", "failed"))
    print(f"{result.finished} of {result.cases} cases finished ({result.succeeded} in this run, {result.skipped} earlier{rate}; quality: {quality}); "
          f"{result.failed} not finished" + (" - see errors.csv" if result.failed else "")
          + (" - review and failed cases are listed first in report.html"
             if "report" in result.outputs and (result.qualities.get("review") or result.qualities.get("failed")) else ""))
    for name in ("measurements_parquet", "measurements_csv", "normative_csv", "errors", "report"):
        if name in result.outputs:
            print(f"{name}: {result.outputs[name]}")
    return result.exit_code
