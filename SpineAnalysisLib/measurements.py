"""Clinical measurements of the lumbar spine from a label map (and optionally the MR image).

Public API: :class:`Measurement`, :func:`measure_case`, :func:`measure_case_with_landmarks`, :func:`measurements_to_table`,
:func:`write_measurements`. The geometry lives in :mod:`SpineAnalysisLib.measure`.

All lengths are in millimetres and angles in degrees, in *patient* space: voxel spacing (also strongly
anisotropic, e.g. 0.6 x 0.6 x 3.5 mm) and oblique direction matrices are taken into account, and LPS or RAS
files give the same values. Every structure is measured in its own mid-sagittal plane - the patient's sagittal
plane (normal = patient left-right axis) through the structure's centroid - resampled at 0.2-0.5 mm with
nearest-neighbour interpolation (:mod:`.measure.plane`). Corners of vertebral bodies come from
:mod:`.measure.landmarks`.

Parameters (``structure``, ``parameter``, ``unit``):

* disc (level "L4-L5"): ``height_anterior_mm``, ``height_middle_mm``, ``height_posterior_mm``,
  ``height_mean_mm``, ``segmental_angle_deg``, ``volume_mm3``, ``dh_bianque`` (mm), ``dhi``, ``hdr``,
  ``delta_si``, ``pfirrmann_estimate``, ``pfirrmann_confidence``, ``dhi_z``, ``hdr_z``, ``delta_si_z`` - see
  :mod:`.measure.disc`, :mod:`.measure.bianque` (BianqueNet: Zheng et al., Nat Commun 13:841, 2022),
  :mod:`.measure.pfirrmann` and :mod:`.measure.normative` (the project's own healthy reference).
* vertebra (level "L3"): ``height_anterior_mm``, ``height_middle_mm``, ``height_posterior_mm``,
  ``wedge_ratio``, ``biconcavity_ratio``, ``genant_grade``, ``ap_depth_mm``, ``volume_mm3``,
  ``slip_percent``, ``centroid_r_mm``, ``centroid_a_mm``, ``centroid_s_mm`` - see :mod:`.measure.vertebra`.
* spine: ``lumbar_lordosis_deg`` (level "L1-S1" or "L1-L5"), ``sacral_slope_deg`` ("S1"), ``cobb_max_deg``
  (level = the span of vertebrae measured) - see :mod:`.measure.alignment`.

A value that cannot be measured (structure cut by the field of view, neighbour missing, no image, ...) is
``None`` with the reason in ``note``; nothing is ever guessed. A value outside the range anatomy allows is withheld
the same way (note ``"withheld: ..."``, :mod:`.quality`), so no caller ever sees it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import imageio
from . import labels as scheme
from . import quality as quality_checks
from .errors import InputError
from .measure import alignment, disc, flags, inputs, landmark_points, normative, vertebra
from .measure.sections import Spine

ROW_COLUMNS = ("structure", "level", "parameter", "value", "unit", "note", "reference", "flag")
CSV_COLUMNS = ROW_COLUMNS + ("quality",)
TABLE_KEYS = ROW_COLUMNS + ("label",)


@dataclass
class Measurement:
    """One measured value.

    ``value`` is None when the parameter could not be measured; ``note`` then gives the reason (otherwise an
    optional method note). ``label`` is the structure's label id (None for spine rows). ``reference`` names the
    healthy reference a z-score is computed against; ``flag`` is True when the value is outside normal range by
    the one rule of :mod:`.measure.flags` (None when the row has no reference).
    """

    structure: str  # "disc" | "vertebra" | "spine"
    level: str  # "L4-L5", "L3"; for spine rows the span, e.g. "L1-S1"
    parameter: str
    value: float | None
    unit: str  # "mm", "deg", "mm3", "ratio", "percent", "grade", "z", ""
    note: str = ""
    label: int | None = None
    reference: str = ""
    flag: bool | None = None


def _requested(labels: Iterable[int] | None) -> set[int] | None:
    if labels is None:
        return None
    wanted = set()
    for label in labels:
        try:
            value = int(label)
        except (TypeError, ValueError):
            raise InputError(f"labels: {label!r} is not a label id") from None
        if not scheme.is_known(value):
            raise InputError(f"labels: {value} is not in the SpineAnalysis label scheme")
        wanted.add(value)
    return wanted


def _row(structure: str, level: str, parameter: str, value, unit: str, note: str, label: int | None, reference: str = "") -> Measurement:
    if value is not None:
        value = float(value)
        if not math.isfinite(value):
            value = None
            note = (note + "; " if note else "") + "not measurable (numerical failure)"
    flag = flags.outside_normal(value, parameter) if unit == "z" and reference else None
    return Measurement(structure, level, parameter, value, unit, note, label, reference, flag)


def _guarded(compute, parameters):
    """Rows of one structure; a numerical failure on an odd outline yields missing values, not a crash."""
    try:
        return compute()
    except (ArithmeticError, ValueError, IndexError, np.linalg.LinAlgError) as error:
        note = f"not measurable: {type(error).__name__}: {error}".splitlines()[0]
        return [(name, None, unit, note) for name, unit in parameters]


def measure_case(
    image: sitk.Image | None,
    label_map: sitk.Image,
    *,
    sex: str | None = None,
    age: float | None = None,
    labels: Iterable[int] | None = None,
    masks: str = "model",
    volume: inputs.Volume | None = None,
) -> list[Measurement]:
    """Measure every vertebra, disc and the spine's alignment in ``label_map``.

    ``image`` (same grid as the label map) is only needed for the signal-intensity parameters (``delta_si``,
    ``pfirrmann_estimate``, ``delta_si_z``); without it they are reported missing with a reason. ``sex``
    ("F"/"M") and ``age`` (years) are recorded with the z-scores; ``masks`` says how the label map was drawn
    ("model": by the shipped model, the default; "expert": by hand) and selects the matching healthy reference
    of :mod:`.measure.normative`. ``labels`` restricts the
    output to these structures (their neighbours are still used); spine rows are only produced when
    ``labels`` is None. Discs are reported when labelled or when both bounding vertebrae are labelled.

    ``volume``: the inputs already checked and indexed by :func:`.measure.inputs.load` ``(image, label_map)``, for a
    caller that needs them too (the CT rows of :mod:`.measure_segmentation`); loaded here when None.

    Rows come in anatomical order (vertebrae and discs cranial to caudal), then the spine rows.
    Raises :class:`InputError` (one line) for unusable inputs.
    """
    return _measure(image, label_map, sex=sex, age=age, labels=labels, masks=masks, volume=volume)[0]


def measure_case_with_landmarks(image: sitk.Image | None, label_map: sitk.Image, **options) -> tuple[list[Measurement], dict]:
    """:func:`measure_case` (``options``: its keyword arguments) and where each value was measured: the landmarks of
    the measured values, read from the same geometry (:func:`.measure.landmark_points.collect`, landmarks.json)."""
    measurements, spine = _measure(image, label_map, **options)
    return measurements, landmark_points.collect(spine, measurements)


def _measure(image, label_map, *, sex=None, age=None, labels=None, masks="model", volume=None) -> tuple[list[Measurement], Spine]:
    sex = normative.normalise_sex(sex)
    age = normative.check_age(age)
    masks = normative.check_masks(masks)
    wanted = _requested(labels)
    volume = volume if volume is not None else inputs.load(image, label_map)
    spine = Spine(volume)

    structures = [(v, "vertebra") for v in spine.vertebrae] + [(d, "disc") for d in spine.discs()]
    structures.sort(key=lambda item: scheme.anatomical_rank(item[0]))
    result: list[Measurement] = []
    for label, kind in structures:
        if wanted is not None and label not in wanted:
            continue
        if kind == "vertebra":
            level = scheme.vertebra_name(label)
            rows = _guarded(lambda: vertebra.rows(spine, label), vertebra.PARAMETERS)
        else:
            level = spine.disc_name(label)
            rows = _guarded(lambda: disc.rows(spine, label, sex, age, masks), disc.PARAMETERS)
        for parameter, value, unit, note, *reference in rows:
            result.append(_row(kind, level, parameter, value, unit, note, label, *reference))
    if wanted is None:
        try:
            spine_rows = alignment.rows(spine)
        except (ArithmeticError, ValueError, IndexError, np.linalg.LinAlgError) as error:
            note = f"not measurable: {type(error).__name__}: {error}".splitlines()[0]
            spine_rows = [("", name, None, unit, note) for name, unit in alignment.PARAMETERS]
        for level, parameter, value, unit, note in spine_rows:
            result.append(_row("spine", level, parameter, value, unit, note, None))
    at_edge = {spine.disc_name(x) if scheme.is_disc(x) else scheme.vertebra_name(x) for x in spine.chain_ends_near_edge()}
    return quality_checks.withhold_implausible(result, at_edge), spine


def measurements_to_table(measurements: Iterable[Measurement]) -> list[dict]:
    """Rows as dicts with keys structure, level, parameter, value, unit, note, label."""
    return [{key: getattr(m, key) for key in TABLE_KEYS} for m in measurements]


def _format_value(value: float | None) -> str:
    if value is None:
        return ""
    return repr(round(float(value), 6))


def _csv_cells(m: Measurement) -> list[str]:
    """The :data:`ROW_COLUMNS` cells of ``m`` for a CSV row (empty value when missing, flag true/false/empty)."""
    flag = "" if m.flag is None else str(bool(m.flag)).lower()
    return [m.structure, m.level, m.parameter, _format_value(m.value), m.unit, m.note, m.reference, flag]


def _json_row(m: Measurement) -> dict:
    """The :data:`TABLE_KEYS` of ``m`` for a JSON row (value rounded to 6 decimals, null when missing)."""
    row = {key: getattr(m, key) for key in TABLE_KEYS}
    row["value"] = None if m.value is None else round(float(m.value), 6)
    return row


def write_measurements(measurements: Iterable[Measurement], outdir: str | os.PathLike, quality: str | None = None) -> tuple[Path, Path]:
    """Write OUTDIR/measurements.csv (columns structure,level,parameter,value,unit,note,reference,flag,quality; empty
    value when missing, flag true/false/empty) and OUTDIR/measurements.json (a list of row objects with ``label``
    too, null when missing). ``quality`` is the case's quality status repeated on every row (:mod:`.quality`); by
    default it is assessed from the rows alone (no labelling report). Both files are written atomically."""
    measurements = list(measurements)
    if quality is None:
        quality = quality_checks.assess(measurements).status
    outdir = Path(outdir)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for m in measurements:
        writer.writerow(_csv_cells(m) + [quality])
    csv_path = imageio.write_text(buffer.getvalue(), outdir / "measurements.csv")
    rows = [{**_json_row(m), "quality": quality} for m in measurements]
    json_path = imageio.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", outdir / "measurements.json")
    return csv_path, json_path
