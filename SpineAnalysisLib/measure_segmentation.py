"""Measure a segmentation made by another tool, on CT or MRI ("bring your own segmentation").

:func:`measure_segmentation` is what ``spineanalysis measure``, ``batch`` (labels column), the Slicer module
and the web page call: it translates the label map (:mod:`.label_schemes`), finds the modality
(:mod:`.modality`), measures with :func:`.measurements.measure_case`, withholds the MR-only parameters on CT
and adds ``trabecular_hu`` per vertebral body on CT (:mod:`.measure.trabecular`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import SimpleITK as sitk

from . import imageio, label_schemes, modality
from . import labels as scheme
from .errors import InputError
from .measure import alignment, disc, inputs, landmark_points, trabecular, vertebra
from .measurements import Measurement, measure_case_with_landmarks, write_measurements
from .quality import assess

SUMMARY = "measure_summary.json"


@dataclass
class SegmentationResult:
    """Measurements plus what was read from the inputs (stated in the output)."""

    measurements: list[Measurement]
    label_scheme: str
    recognised_by: str
    bodies: bool
    modality: str  # "CT", "MR", "unknown" or "none" (no image)
    modality_source: str
    levels: list[str]
    notes: list[str] = field(default_factory=list)
    quality: dict = field(default_factory=dict)  # :mod:`.quality` status of the case
    scheme_map: sitk.Image | None = field(default=None, repr=False)  # the label map in this project's scheme (not in the summary)
    #: where each value was measured (:mod:`.measure.landmark_points`, the content of landmarks.json)
    landmarks: dict = field(default_factory=lambda: landmark_points.empty("nothing measured"), repr=False)

    def summary(self) -> dict:
        return {
            "levels": self.levels,
            "quality": self.quality,
            "label_scheme": self.label_scheme,
            "recognised_by": self.recognised_by,
            "bodies": self.bodies,
            "modality": self.modality,
            "modality_source": self.modality_source,
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        """Human-readable lines for a terminal."""
        lines = [
            f"quality: {self.quality.get('status', '?')}" + "".join(f"; {reason}" for reason in self.quality.get("reasons", [])),
            f"label scheme: {self.label_scheme} ({self.recognised_by})",
            f"modality: {self.modality} ({self.modality_source})",
            f"levels: {', '.join(self.levels) or 'none'}",
        ]
        if not self.bodies:
            lines.append(f"withheld: every geometric measurement {label_schemes.NEEDS_BODIES}")
        return lines + [f"note: {note}" for note in self.notes]


def _withheld_rows(label_map: sitk.Image) -> list[Measurement]:
    """Every row of a whole-vertebra map without bodies, value None with the reason."""
    values = label_schemes.present_labels(label_map)
    structures = [(v, "vertebra") for v in values if scheme.is_vertebra(v)] + [(v, "disc") for v in values if scheme.is_disc(v)]
    structures.sort(key=lambda item: scheme.anatomical_rank(item[0]))
    rows = []
    for label, kind in structures:
        level = scheme.vertebra_name(label) if kind == "vertebra" else scheme.disc_name(label)
        for parameter, unit in vertebra.PARAMETERS if kind == "vertebra" else disc.PARAMETERS:
            rows.append(Measurement(kind, level, parameter, None, unit, label_schemes.NEEDS_BODIES, label))
    for parameter, unit in alignment.PARAMETERS:
        rows.append(Measurement("spine", "", parameter, None, unit, label_schemes.NEEDS_BODIES, None))
    return rows


def _for_ct(measurements: list[Measurement], image: sitk.Image, label_map: sitk.Image, volume: inputs.Volume) -> list[Measurement]:
    """MR-only parameters withheld; ``trabecular_hu`` after each vertebra's rows (``volume``: the inputs as
    :func:`.measure.inputs.load` checked them for the measurements)."""
    extra = trabecular.rows(image, label_map, volume.stats)
    result: list[Measurement] = []
    for n, m in enumerate(measurements):
        if m.structure == "disc" and modality.mri_only(m.parameter):
            m = replace(m, value=None, note=modality.NOT_ON_CT, reference="", flag=None)
        result.append(m)
        last_of_vertebra = m.structure == "vertebra" and (
            n + 1 == len(measurements) or measurements[n + 1].label != m.label or measurements[n + 1].structure != "vertebra"
        )
        if last_of_vertebra and m.label in extra:
            parameter, value, unit, note = extra[m.label]
            result.append(Measurement("vertebra", m.level, parameter, value, unit, note, m.label))
    return result


def measure_segmentation(
    image: sitk.Image | None,
    label_map: sitk.Image,
    *,
    label_scheme: str = "auto",
    bodies: sitk.Image | None = None,
    sex: str | None = None,
    age: float | None = None,
    labels: Iterable[int] | None = None,
    detected: tuple[str, str] | None = None,
) -> SegmentationResult:
    """Measure ``label_map`` (any supported scheme, see :mod:`.label_schemes`) on ``image`` (CT or MRI).

    ``detected``: :func:`.modality.detect` of ``image`` when the caller has it already (the review page and the
    Slicer module re-measure the same volume after every edit); detected here when None.

    Raises :class:`~.errors.InputError` (one line) for an unknown or ambiguous map, a body map given as the
    label map, or unusable inputs.
    """
    if image is not None and not imageio.same_grid(label_map, image):
        raise InputError(
            f"label map and image are on different grids ({imageio.describe_grid(label_map)} vs "
            f"{imageio.describe_grid(image)}); resample the label map onto the image first"
        )
    translation = label_schemes.translate(label_map, label_scheme, bodies)
    if image is None:
        kind, source = "none", "no image given"
    else:
        inputs.check_image(image)
        kind, source = detected if detected is not None else modality.detect(image)
    if translation.bodies:
        # on CT the trabecular_hu rows need the checked inputs too: loaded once for both
        volume = inputs.load(image, translation.label_map) if kind == modality.CT else None
        measurements, landmarks = measure_case_with_landmarks(image, translation.label_map, sex=sex, age=age, labels=labels, volume=volume)
        if kind == modality.CT:
            measurements = _for_ct(measurements, image, translation.label_map, volume)
    else:
        measurements = _withheld_rows(translation.label_map)
        landmarks = landmark_points.empty(label_schemes.NEEDS_BODIES)
    levels = translation.levels()
    quality = assess(measurements, {"levels": levels})
    if not translation.bodies:
        quality.add("failed", "whole vertebrae without bodies: nothing geometric can be measured (give --bodies)")
    return SegmentationResult(
        measurements, translation.scheme, translation.reason, translation.bodies, kind, source, levels, list(translation.notes), quality.to_dict(),
        translation.label_map, landmarks,
    )


def measure_files(image_path, labels_path, output_dir, *, label_scheme: str = "auto", bodies_path=None, sex=None, age=None) -> SegmentationResult:
    """Read the files, measure them and write OUTDIR/measurements.csv/.json, OUTDIR/landmarks.json (where each value was
    measured, :mod:`.measure.landmark_points`), OUTDIR/measure_summary.json and OUTDIR/report.png (the mid-sagittal picture with the quality banner, as ``analyze`` writes it)
    (``spineanalysis measure`` and a batch case with a labels column)."""
    from .quality import Quality
    from .report import write_report

    image = imageio.read_scan(image_path)  # a label map given as the image is refused
    label_map = imageio.on_reference_grid(imageio.read_image(labels_path), labels_path, image)  # a Slicer file cropped to its segments
    bodies = imageio.read_image(bodies_path) if bodies_path else None
    result = measure_segmentation(image, label_map, label_scheme=label_scheme, bodies=bodies, sex=sex, age=age)
    write_measurements(result.measurements, output_dir, quality=result.quality.get("status"))
    landmark_points.write_landmarks(result.landmarks, output_dir)
    write_report(image, result.scheme_map, result.measurements, Path(output_dir) / "report.png",
                 title=f"{Path(labels_path).name} on {Path(image_path).name} — segmentation given ({result.label_scheme})",
                 notes=result.notes, quality=Quality(**result.quality), landmarks=result.landmarks)
    imageio.write_text(json.dumps(result.summary(), indent=1) + "\n", Path(output_dir) / SUMMARY)
    return result
