"""Measurements as a structured CSV that carries the DICOM identifiers of the measured series.

One row per measured value (long format, ready for a database or a registry import)::

    PatientID, StudyInstanceUID, SeriesInstanceUID, Modality, structure, level, label,
    snomed_code, snomed_meaning, parameter, value, unit, note, reference, flag, quality

``reference`` and ``flag`` are those of ``measurements.csv`` (the one flag rule of :mod:`.measure.flags`, true/false/
empty) and ``quality`` the case's quality status (:mod:`.quality`), so a registry import cannot take a flagged value
or a failed case for a normal one.

The identifiers come from the image's metadata (:func:`SpineAnalysisLib.imageio.read_image` keeps DICOM tags
0010|0020, 0020|000d, 0020|000e and 0008|0060 when it reads a DICOM series folder) or are given explicitly;
they are empty for NIfTI/NRRD input. ``include_patient_id=False`` leaves PatientID out (pseudonymous
exports). The file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

import SimpleITK as sitk

from . import imageio
from . import labels as scheme
from .imageio import DICOM_IDENTIFIER_TAGS, dicom_identifiers
from .measurements import ROW_COLUMNS, Measurement, _csv_cells, _json_row

MEASUREMENT_COLUMNS = ("structure", "level", "label", "snomed_code", "snomed_meaning", "parameter", "value", "unit", "note", "reference", "flag",
                       "quality")


def _codes(measurement: Measurement) -> tuple[str, str]:
    try:
        if measurement.structure in ("vertebra", "disc") and measurement.level:
            structure = scheme.structure_for_name(measurement.level)
        elif measurement.label is not None:
            structure = scheme.structure(int(measurement.label))
        else:
            return "", ""
    except ValueError:
        return "", ""
    return structure.snomed_code, structure.snomed_meaning


def structured_rows(measurements: Iterable[Measurement], identifiers: dict[str, str], include_patient_id: bool = True,
                    quality: str | None = None) -> list[list[str]]:
    """``quality``: the case's status; None: assessed from ``measurements`` (:func:`.quality.assess`)."""
    measurements = list(measurements)
    if quality is None:
        from .quality import assess

        quality = assess(measurements).status
    columns = [c for c in DICOM_IDENTIFIER_TAGS if include_patient_id or c != "PatientID"]
    rows = [columns + list(MEASUREMENT_COLUMNS)]
    for m in measurements:
        code, meaning = _codes(m)
        structure, level, parameter, value, unit, note, reference, flag = _csv_cells(m)
        rows.append(
            [identifiers.get(c, "") or "" for c in columns]
            + [structure, level, "" if m.label is None else str(int(m.label)), code, meaning, parameter, value, unit, note, reference, flag, quality]
        )
    return rows


def write_structured_csv(
    measurements: Iterable[Measurement],
    path: str | os.PathLike,
    image: sitk.Image | None = None,
    identifiers: dict[str, str] | None = None,
    include_patient_id: bool = True,
    quality: str | None = None,
) -> Path:
    """Write the measurements with the DICOM study/series identifiers (``identifiers`` override the image's);
    ``quality``: the case's status (None: assessed from the measurements)."""
    values = dicom_identifiers(image)
    values.update({k: v for k, v in (identifiers or {}).items() if v is not None})
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(structured_rows(measurements, values, include_patient_id, quality))
    return imageio.write_text(buffer.getvalue(), Path(path))


CASE_COLUMNS = ("image", "model") + ROW_COLUMNS + ("quality",)


def case_file_stem(image_name: str) -> str:
    """``<image>_measurements`` with characters other than letters, digits, ``.``, ``_`` and ``-`` replaced."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in (image_name or "").strip()) or "case"
    return f"{safe}_measurements"


def write_case_measurements(
    measurements: Iterable[Measurement], outdir: str | os.PathLike, image: str, model: str = "", quality: str = "", overwrite: bool = False
) -> tuple[Path, Path]:
    """Write OUTDIR/<image>_measurements.csv and .json: the rows of ``write_measurements`` with the image and the
    model named on every row.

    Raises ``FileExistsError`` (and writes nothing) when either file exists and ``overwrite`` is False.
    """
    measurements = list(measurements)
    stem = case_file_stem(image)
    csv_path, json_path = Path(outdir) / f"{stem}.csv", Path(outdir) / f"{stem}.json"
    existing = [str(p) for p in (csv_path, json_path) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s)")
    rows = [{"image": image, "model": model or "", **_json_row(m), "quality": quality} for m in measurements]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CASE_COLUMNS)
    for m in measurements:
        writer.writerow([image, model or ""] + _csv_cells(m) + [quality])
    return imageio.write_text(buffer.getvalue(), csv_path), imageio.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", json_path)
