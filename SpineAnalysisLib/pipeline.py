"""The ``analyze`` pipeline: segment, measure and report one case, writing every output atomically."""

from __future__ import annotations

import json
from pathlib import Path

from . import imageio
from .inference import ProgressCallback, segment_image


def analyze(
    image_path: str | Path,
    output_dir: str | Path,
    model: str | None = None,
    device: str = "auto",
    sex: str | None = None,
    age: float | None = None,
    progress: ProgressCallback | None = None,
    threads: int | None = None,
    fast: bool = False,
) -> dict[str, Path]:
    """Write ``labels.nii.gz``, ``measurements.csv``/``.json``, ``report.png`` and ``summary.json``."""
    from .measurements import measure_case, write_measurements
    from .report import write_report

    output_dir = Path(output_dir)
    image = imageio.read_image(image_path)
    result = segment_image(image, model, device, progress, threads=threads, fast=fast)
    outputs = {"labels": imageio.write_image(result.label_map, output_dir / "labels.nii.gz")}
    summary = result.summary()
    if result.report.levels:
        measurements = measure_case(image, result.label_map, sex=sex, age=age)
        outputs["measurements"], outputs["measurements_json"] = write_measurements(measurements, output_dir)
    else:
        measurements = []
        outputs["measurements"], outputs["measurements_json"] = write_measurements([], output_dir)
    outputs["report"] = write_report(image, result.label_map, measurements, output_dir / "report.png",
                                     title=f"{Path(image_path).name} — {result.model}", notes=result.report.flags + result.warnings)
    outputs["summary"] = imageio.write_text(json.dumps(summary, indent=1) + "\n", output_dir / "summary.json")
    return outputs
