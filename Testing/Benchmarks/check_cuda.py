"""CUDA path check on a GPU machine: does mixed-precision GPU inference give the CPU's labels, and where does its time go?

    python Testing/Benchmarks/check_cuda.py [--runs 5]

Segments the bundled real sample (MyoSegmenTUM VB3_02) on the CPU (float32) and on CUDA (float16 autocast,
batched slices), default and ``--fast``, and prints one JSON line per mode: the Dice between the CPU and GPU label
maps per label, the share of voxels that differ, whether the named levels agree, the median wall time of
``--runs`` GPU runs (synchronised) and the time spent in each stage of ``segment_image`` (from its progress
callback). Prints numbers; not a test (CI has no GPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_image.nii.gz"


def stage_times(image, device, fast):
    """Seconds between successive progress messages of one segment_image call (stages merged by message)."""
    import torch

    from SpineAnalysisLib.inference import segment_image

    marks = []
    started = time.perf_counter()
    result = segment_image(image, device=device, fast=fast, progress=lambda f, m: marks.append((time.perf_counter(), m)))
    if device == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - started
    stages: dict[str, float] = {}
    previous = started
    previous_message = "start"
    for stamp, message in marks:
        stages[previous_message] = stages.get(previous_message, 0.0) + stamp - previous
        previous, previous_message = stamp, message
    return result, total, {k: round(v, 3) for k, v in stages.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import numpy as np
    import SimpleITK as sitk
    import torch

    from SpineAnalysisLib.evaluation import dice
    from SpineAnalysisLib.inference import segment_image

    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU: this check runs on a GPU machine")
    print(json.dumps({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
                      "cpu_threads": torch.get_num_threads(), "python": platform.python_version()}))
    image = sitk.ReadImage(str(SAMPLE))
    for fast in (False, True):
        cpu = segment_image(image, device="cpu", fast=fast)
        cpu_labels = sitk.GetArrayFromImage(cpu.label_map)
        segment_image(image, device="cuda", fast=fast)  # warm-up: model load, cuDNN autotune
        times, stages = [], None
        for _ in range(args.runs):
            gpu, total, stages = stage_times(image, "cuda", fast)
            times.append(total)
        gpu_labels = sitk.GetArrayFromImage(gpu.label_map)
        labels = (set(np.unique(cpu_labels)) | set(np.unique(gpu_labels))) - {0}
        dice_per_label = {int(label): round(dice(cpu_labels == label, gpu_labels == label), 4) for label in sorted(labels)}
        print(json.dumps({
            "fast": fast, "grid": list(image.GetSize()), "spacing_mm": [round(s, 3) for s in image.GetSpacing()],
            "gpu_median_s": round(statistics.median(times), 3), "gpu_runs_s": [round(t, 3) for t in times],
            "cpu_s": round(cpu.seconds, 2),
            "gpu_stages_s": stages, "gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20),
            "levels_cpu": cpu.report.levels, "levels_gpu": gpu.report.levels, "levels_agree": cpu.report.levels == gpu.report.levels,
            "voxels_differing_fraction": round(float((cpu_labels != gpu_labels).mean()), 6), "dice_cpu_vs_gpu": dice_per_label,
        }), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
