"""Segmentation speed and peak memory on typical lumbar MRI grids (prints numbers; not a test).

    .venv/bin/python Testing/Benchmarks/benchmark_segment.py [--device auto|cpu|cuda] [--threads N] [--fast]

Grids: the bundled real sample resampled to (a) 15 sagittal slices of 512 x 512 at
0.5 x 0.5 x 4 mm (a clinical 2D T2 stack) and (b) 224 x 224 x 80 at 1 mm. Each grid runs in its
own process so that the peak resident memory (ru_maxrss) is that grid's; the time excludes Python
start-up and model loading (reported separately) and is the median of 3 runs.
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
    "clinical 15x512x512 @0.5x0.5x4mm": ((4.0, 0.5, 0.5), (15, 512, 512)),
    "isotropic 224x224x80 @1mm": ((1.0, 1.0, 1.0), (80, 224, 224)),
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


def run_one(name, device, threads, fast=False):
    import torch

    from SpineAnalysisLib.inference import segment_image

    image = make_grid(*GRIDS[name])
    started = time.perf_counter()
    segment_image(image, device=device, threads=threads, fast=fast)  # includes model loading (first call)
    first = time.perf_counter() - started
    times = []
    for _ in range(3):
        started = time.perf_counter()
        result = segment_image(image, device=device, threads=threads, fast=fast)
        if result.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    print(json.dumps({"grid": name, "fast": fast, "device": result.device, "median_s": round(statistics.median(times), 2), "first_call_s": round(first, 2),
                      "peak_rss_mb": round(peak_mb), "gpu_peak_mb": gpu_peak and round(gpu_peak), "levels": result.report.levels}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--grid")
    parser.add_argument("--fast", action="store_true", help="one scale, no test-time zooms (segment --fast)")
    args = parser.parse_args()
    if args.grid:
        run_one(args.grid, args.device, args.threads, args.fast)
        return
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs, python {platform.python_version()}")
    for name in GRIDS:
        subprocess.run([sys.executable, __file__, "--grid", name, "--device", args.device, "--threads", str(args.threads)] + ["--fast"] * args.fast, check=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
