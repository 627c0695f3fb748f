"""Segmentation speed and peak memory on typical lumbar MRI grids (prints numbers; not a test).

    .venv/bin/python Testing/Benchmarks/benchmark_segment.py [--device auto|cpu|cuda] [--threads N] [--whole]

Grids: the bundled real sample (224 x 160 x 64 voxels, 1 mm) resampled to (a) 381 x 381 x 77 and
(b) 224 x 224 x 77 sagittal voxels at 1 mm (issue 27's sizes; voxels outside the sample are 0) and
(c) 15 sagittal slices of 512 x 512 at 0.5 x 0.5 x 4 mm (a clinical 2D T2 stack). Each grid runs in
its own process so that the peak resident memory (ru_maxrss) is that grid's; the time excludes
Python start-up and model loading (reported separately) and is the median of 3 runs; the stage
times (prepare, localise, segment, label) are those of the median run, with the share of the volume
the full pass ran on (``box_fraction``). Also printed: the 1-minute load average before and after
and the process CPU time of the median run (all threads; on a shared machine less inflated by
other jobs than the wall-clock time).

``--whole``: skip the localisation (the full pass on the whole volume), the upper bound for a field
of view filled with spine. (No ``--fast``: ``segment --fast`` now runs the default settings.)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_image.nii.gz"
GRIDS = {
    "isotropic 381x381x77 @1mm": ((1.0, 1.0, 1.0), (77, 381, 381)),
    "isotropic 224x224x77 @1mm": ((1.0, 1.0, 1.0), (77, 224, 224)),
    "clinical 15x512x512 @0.5x0.5x4mm": ((4.0, 0.5, 0.5), (15, 512, 512)),
}


def make_grid(spacing_slice_row_col, shape):
    """Resample the sample onto a sagittal grid (slices L-R, rows S-I, columns A-P) around its centre."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.ReadImage(str(SAMPLE))
    # index axes: i = A->P (columns), j = S->I (rows), k = R->L (slices), in LPS
    size = (shape[2], shape[1], shape[0])
    spacing = (spacing_slice_row_col[2], spacing_slice_row_col[1], spacing_slice_row_col[0])
    direction = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float)  # columns: i->+P(y), j->-S(z), k->+L(x)
    reference = sitk.Image(size, sitk.sitkFloat32)
    reference.SetSpacing(spacing)
    reference.SetDirection(tuple(direction.ravel()))
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))
    half = direction @ (np.array(spacing) * (np.array(size) - 1) / 2)
    reference.SetOrigin(tuple(centre - half))
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def run_one(name, device, threads, whole=False):
    import os

    import torch

    from SpineAnalysisLib import inference
    from SpineAnalysisLib.model.localise import SpineBox

    if whole:
        inference._locate_spine = lambda network, canonical, frame, *rest: SpineBox.whole(frame.shape)
    image = make_grid(*GRIDS[name])
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    inference.segment_image(image, device=device, threads=threads)  # includes model loading (first call)
    first = time.perf_counter() - started
    runs = []
    for _ in range(3):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = inference.segment_image(image, device=device, threads=threads)
        if result.device == "cuda":
            torch.cuda.synchronize()
        runs.append((time.perf_counter() - started, time.process_time() - cpu_started, result))
    runs.sort(key=lambda run: run[0])
    median_s, median_cpu_s, median_result = runs[1]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    print(json.dumps({"grid": name, "whole_volume": whole, "device": result.device, "median_s": round(median_s, 2), "all_s": [round(t, 2) for t, _, _ in runs], "median_run_cpu_s": round(median_cpu_s, 2),
                      "stages": {k: round(v, 2) for k, v in median_result.stages.items()}, "first_call_s": round(first, 2),
                      "peak_rss_mb": round(peak_mb), "gpu_peak_mb": gpu_peak and round(gpu_peak), "load_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
                      "levels": result.report.levels}), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--grid")
    parser.add_argument("--grids", help="comma-separated grid names (default: all)")
    parser.add_argument("--whole", action="store_true", help="no localisation: the full pass on the whole volume")
    args = parser.parse_args()
    if args.grid:
        run_one(args.grid, args.device, args.threads, args.whole)
        return
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs, python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for name in args.grids.split(",") if args.grids else GRIDS:
        subprocess.run([sys.executable, __file__, "--grid", name, "--device", args.device, "--threads", str(args.threads)] + ["--whole"] * args.whole, check=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
