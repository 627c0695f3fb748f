"""The ``analyze`` pipeline: segment, measure and report one case, writing every output atomically."""

from __future__ import annotations

import json
import time
from pathlib import Path

import SimpleITK as sitk

from . import imageio
from .inference import ProgressCallback, segment_image
from .settings import Subject


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
    image: sitk.Image | None = None,
) -> dict[str, Path]:
    """Write ``labels.nii.gz``, ``measurements.csv``/``.json``, ``landmarks.json`` (where each value was measured,
    :mod:`.measure.landmark_points`), ``report.png`` and ``summary.json``.

    The case's quality status (:mod:`.quality`) is in ``summary["quality"]``, the ``quality`` column of the
    measurement files and the banner of report.png.

    ``sex`` and ``age`` are checked (:class:`settings.Subject`) and the file is read and checked
    (:func:`imageio.read_scan`, :func:`imageio.check_finite`) before the model runs; ``image``: the file's image when the caller has read
    and checked it already.
    """
    from .measure import landmark_points
    from .measurements import measure_case_with_landmarks, write_measurements
    from .quality import assess
    from .report import write_report

    subject = Subject(sex, age)
    output_dir = Path(output_dir)
    image = imageio.read_scan(image_path) if image is None else image
    imageio.check_finite(image, str(image_path))  # the measurements refuse NaN/infinite voxels: say so before the model runs
    result = segment_image(image, model, device, progress, threads=threads, fast=fast)
    outputs = {"labels": imageio.write_image(result.label_map, output_dir / "labels.nii.gz")}
    summary = result.summary()
    clock = time.perf_counter()
    if result.report.levels:
        measurements, landmarks = measure_case_with_landmarks(image, result.label_map, sex=subject.sex, age=subject.age)
    else:
        measurements, landmarks = [], landmark_points.empty("no levels found: nothing measured")
    summary["stages"]["measure_s"] = round(time.perf_counter() - clock, 2)
    quality = assess(measurements, summary)
    summary["quality"] = quality.to_dict()
    outputs["measurements"], outputs["measurements_json"] = write_measurements(measurements, output_dir, quality=quality.status)
    outputs["landmarks"] = landmark_points.write_landmarks(landmarks, output_dir)
    clock = time.perf_counter()
    outputs["report"] = write_report(image, result.label_map, measurements, output_dir / "report.png",
                                     title=f"{Path(image_path).name} — {result.model}", notes=result.report.flags + result.warnings,
                                     quality=quality, landmarks=landmarks)
    summary["stages"]["report_s"] = round(time.perf_counter() - clock, 2)
    outputs["summary"] = imageio.write_text(json.dumps(summary, indent=1) + "\n", output_dir / "summary.json")
    return outputs
