"""Batch throughput (cases per hour) with 1 and 2 local Dask workers on a fixed set of real cases.

    .venv/bin/python Testing/Benchmarks/benchmark_batch.py [--cases 12] [--workers 1 2] [--device cpu] [--full-scans]

Cases: ``--cases`` crops of 14 central sagittal slices (224 x 160 x 14 voxels at 1 mm) of the bundled real sample,
at different offsets; with ``--full-scans``, whole scans as a cohort holds them: the image cases of the validation
split of ``../shared/data/lumbar_mri`` (``$SPINEANALYSIS_DATA``), in the split's order, repeated when ``--cases``
asks for more (a repeated file is a new case to the batch). For each worker count a fresh batch runs on a local cluster (127.0.0.1, one process per
worker, cores / workers torch threads each) with the shipped model. Printed per run:

* ``processing_cases_per_hour``: cases / (first task submitted -> last result); workers already hold the model.
  This is the rate that a long batch approaches.
* ``end_to_end_cases_per_hour``: cases / the whole call (cluster start, model loading in each worker, the cohort
  table and report.html), i.e. what a batch of only these cases sees.

The machine (CPU, cores, memory, load average) is printed with the numbers: other work on the machine (a
training run) lowers them. ``worker_user_s``/``worker_sys_s``: CPU time of the worker processes (user, system), read
after the cluster closed. The workers run with ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it, as under
``spineanalysis batch`` (whose command line sets it before the workers start).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_image.nii.gz"
OFFSETS = (20, 22, 24, 26, 28, 30, 32, 34)


def make_cases(folder: Path, count: int) -> Path:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(SAMPLE))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        first = OFFSETS[i % len(OFFSETS)]
        sitk.WriteImage(image[:, :, first:first + 14], str(folder / f"case{i:03d}.nii.gz"))
    return folder


def link_full_scans(folder: Path, count: int) -> Path:
    from SpineAnalysisLib.model.dataset import default_data_dir, read_manifest, split_cases

    data = default_data_dir()
    if not data.is_dir():
        raise SystemExit(f"--full-scans needs the shared data: {data} is not a folder")
    _, validation = split_cases(read_manifest(data))
    images = [record.image_file for record in validation if record.image_file is not None]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        source = images[i % len(images)]
        (folder / f"case{i:03d}_{source.name}").symlink_to(source)
    return folder


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        memory = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    except ImportError:
        memory = "?"
    import torch

    from SpineAnalysisLib.batch.runner import _available_cpus

    return {"cpu": cpu, "cores": _available_cpus(), "memory": memory, "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", help="model name or folder (default: the shipped model)")
    parser.add_argument("--fast", action="store_true", help="batch --fast (deprecated: now the default settings)")
    parser.add_argument("--full-scans", action="store_true", help="whole validation-split scans instead of small crops")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # inherited by the local workers, as the command line does

    from SpineAnalysisLib.batch import run_batch
    from SpineAnalysisLib.model.store import find_model

    info = machine()
    info["model"] = find_model(args.model).label
    print(json.dumps({"machine": info}), flush=True)
    with tempfile.TemporaryDirectory(prefix="spineanalysis-bench-") as tmp:
        cases = (link_full_scans if args.full_scans else make_cases)(Path(tmp) / "cases", args.cases)
        results = []
        for workers in args.workers:
            started, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            result = run_batch(cases, Path(tmp) / f"out-{workers}", workers=workers, device=args.device, model=args.model, fast=args.fast, progress=None)
            total = time.perf_counter() - started
            workers_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)  # the cluster's processes have ended and been waited for
            if result.succeeded != args.cases:
                raise SystemExit(f"only {result.succeeded} of {args.cases} cases finished; see {result.outdir}/errors.csv")
            row = {"workers": workers, "threads_per_worker": max(1, info["cores"] // workers), "cases": args.cases, "device": args.device, "fast": args.fast, "full_scans": args.full_scans,
                   "processing_s": round(result.processing_seconds, 1), "total_s": round(total, 1),
                   "processing_cases_per_hour": round(3600 * args.cases / result.processing_seconds),
                   "end_to_end_cases_per_hour": round(3600 * args.cases / total),
                   "worker_user_s": round(workers_cpu.ru_utime - children.ru_utime, 1), "worker_sys_s": round(workers_cpu.ru_stime - children.ru_stime, 1),
                   "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
                   "load_average_1min_after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
            results.append(row)
            print(json.dumps(row), flush=True)
    print("\n| workers | cases | processing (s) | cases/h (processing) | total (s) | cases/h (end to end) |")
    print("|---|---|---|---|---|---|")
    for row in results:
        print(f"| {row['workers']} | {row['cases']} | {row['processing_s']} | {row['processing_cases_per_hour']} | {row['total_s']} | "
              f"{row['end_to_end_cases_per_hour']} |")


if __name__ == "__main__":
    main()
