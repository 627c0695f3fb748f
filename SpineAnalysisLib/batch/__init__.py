"""Cohort batches: many cases, segmented and measured in parallel on Dask, resumable, with a cohort table,
normative comparison and HTML reports. See docs/batch.md.

    from SpineAnalysisLib.batch import run_batch, rebuild_cohort
    result = run_batch("cohort.csv", "out/")           # local Dask cluster on this machine
    result = run_batch("scans/", "out/", scheduler="tcp://10.0.0.5:8786")   # an existing cluster

Layout of OUTDIR::

    batch.json                 options of the last run, software version
    cases.csv                  the cases found in INPUT (case_id, path, age, sex)
    cases/<case_id>/           per-case outputs of ``analyze`` + case.html + done.json (the folder appears
                               complete: it is renamed into place after done.json was written)
    errors.csv                 case_id, path, stage, error (one line), time - the cases that failed
    measurements.parquet/.csv  the tidy cohort table (one row per case and measurement, with case_id, age, sex)
    normative.parquet/.csv     per case, disc level and parameter: reference, z-score, percentile, flag
    report.html, cohort/*.png  the cohort summary
"""

__all__ = ["Case", "discover_cases", "run_batch", "BatchResult", "rebuild_cohort"]
_WHERE = {"Case": "discover", "discover_cases": "discover", "run_batch": "runner", "BatchResult": "runner", "rebuild_cohort": "cohort"}


def __getattr__(name):  # lazy: the CLI's argument parser imports this package without paying for dask
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(name)
