"""Time SpineAnalysisLib.measurements.measure_case on a full lumbar label map.

Uses a real case of the shared lumbar MRI data (image + labels, VB1_07: T10-S1, 9 vertebral bodies, 8 discs
between them; 361 x 361 x 57 voxels) when present, otherwise an analytic L1-S1 phantom with discs and a T2-like
image on an oblique grid. Prints the median of several runs (target: <= 0.2 s on a 2-core machine).

    .venv/bin/python Testing/Benchmarks/benchmark_measure.py [--runs 7] [--case VB1_07] [--phantom] [--profile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2]))
sys.path.insert(0, str(HERE.parents[1] / "Python"))

from SpineAnalysisLib import imageio  # noqa: E402
from SpineAnalysisLib.measurements import measure_case  # noqa: E402


def data_root() -> Path:
    env = os.environ.get("SPINEANALYSIS_DATA")
    if env:
        return Path(env)
    return HERE.parents[3] / "shared" / "data" / "lumbar_mri"


def load(case: str, phantom: bool):
    root = data_root()
    image_path = root / "images" / f"{case}.nii.gz"
    label_path = root / "labels" / f"{case}.nii.gz"
    if not phantom and image_path.exists() and label_path.exists():
        image = imageio.read_image(image_path)
        return f"real case {case} ({'x'.join(map(str, image.GetSize()))} voxels)", image, imageio.read_label_map(label_path, image)
    import phantoms

    spine = phantoms.build_spine((20, 21, 22, 23, 24, 26), heights=27.0, discs=(11.0, 8.0), top_angle=12.0)
    label_map, image = phantoms.render_phantom(spine, (0.8, 0.8, 1.5), phantoms.oblique(15.0))
    return f"phantom L1-S1 ({'x'.join(map(str, image.GetSize()))} voxels)", image, label_map


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--case", default="VB1_07")
    parser.add_argument("--phantom", action="store_true", help="use the phantom even when real data are present")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    what, image, label_map = load(args.case, args.phantom)
    rows = measure_case(image, label_map)  # warm-up (imports, caches of numpy/SimpleITK)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        measure_case(image, label_map)
        times.append(time.perf_counter() - start)
    measured = sum(r.value is not None for r in rows)
    print(f"{what}: {len(rows)} rows ({measured} with values)")
    print(f"measure_case: median {statistics.median(times):.3f} s over {args.runs} runs (min {min(times):.3f}, max {max(times):.3f})")
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        measure_case(image, label_map)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
