"""The cohort table, rebuilt from the per-case outputs (so a rerun never duplicates rows).

``measurements.parquet`` and ``measurements.csv`` hold one row per case and measurement (tidy/long format):
``case_id, age, sex, structure, level, parameter, value, unit, note, reference, flag, quality, label, model`` (``flag``
true/false/empty as in each case's measurements.csv; boolean in the Parquet file), cases in case-id order
and each case's rows in the order of its own measurements.csv. ``quality`` is the case's quality status (ok / review /
failed, :mod:`SpineAnalysisLib.quality`); cases that are not "ok" stay in the table but are left out of the
normative comparison and the report's statistics unless ``include_flagged`` is set. Only finished cases of the current case list
(``cases.csv``) are in it. ``value`` is empty (null) where the parameter could not be measured, with the reason in
``note``. The table is derived data: delete it, or run ``spineanalysis cohort-report OUTDIR``, and it is rebuilt.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from .. import imageio
from ..errors import SpineAnalysisError
from ..measurements import CSV_COLUMNS
from ..quality import STATUSES
from .discover import Case, read_case_list
from .state import DONE, BatchState

TABLE_COLUMNS = ("case_id", "age", "sex") + CSV_COLUMNS + ("label", "model")
CASE_LIST = "cases.csv"
CASE_LIST_COLUMNS = ("case_id", "path", "age", "sex")


def require_pyarrow():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise SpineAnalysisError("writing the cohort table needs pyarrow: pip install 'spineanalysis[batch]' (or -r requirements.txt)") from None


def write_case_list(outdir: Path, cases: list[Case]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CASE_LIST_COLUMNS)
    for case in cases:
        writer.writerow([case.case_id, case.path, "" if case.age is None else f"{case.age:g}", case.sex or ""])
    return imageio.write_text(buffer.getvalue(), Path(outdir) / CASE_LIST)


def read_cases(outdir: Path) -> list[Case]:
    path = Path(outdir) / CASE_LIST
    if not Path(outdir).is_dir():
        raise SpineAnalysisError(f"{outdir}: no such folder")
    if not path.is_file():
        raise SpineAnalysisError(f"{outdir}: no {CASE_LIST}; is this the output folder of 'spineanalysis batch'?")
    return read_case_list(path)


def _case_rows(case_dir: Path) -> list[dict]:
    json_path = case_dir / "measurements.json"
    if json_path.is_file():
        return json.loads(json_path.read_text(encoding="utf-8"))
    rows = []
    with open(case_dir / "measurements.csv", newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            row["value"] = float(row["value"]) if row.get("value") else None
            row["label"] = None
            rows.append(row)
    return rows


def _summary(case_dir: Path) -> dict:
    """The case's summary.json (read once per case); {} when it is missing, unreadable or not a JSON object."""
    try:
        summary = json.loads((Path(case_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def case_quality(summary: dict, rows: list[dict] | None = None) -> dict:
    """``{"status", "reasons"}`` of a finished case: its summary.json's quality (``summary``, see :func:`_summary`),
    else its rows' quality column; outputs written before quality statuses existed count as "ok" with that said in
    the reasons."""
    quality = summary.get("quality")
    if isinstance(quality, dict) and quality.get("status"):
        return {"status": quality["status"], "reasons": list(quality.get("reasons", []))}
    statuses = {row.get("quality") for row in rows or [] if row.get("quality")}
    if statuses:
        return {"status": max(statuses, key=lambda s: STATUSES.index(s) if s in STATUSES else len(STATUSES)), "reasons": []}
    return {"status": "ok", "reasons": ["not assessed (written before quality statuses)"]}


def case_status(case_dir: Path) -> str:
    """The quality status of a finished case folder (:func:`case_quality` of its summary.json, else of its rows)."""
    summary = _summary(case_dir)
    quality = summary.get("quality")
    if isinstance(quality, dict) and quality.get("status"):
        return quality["status"]
    try:
        rows = _case_rows(Path(case_dir))
    except (OSError, ValueError):
        rows = []
    return case_quality(summary, rows)["status"]


def iter_case_rows(outdir: Path, cases: list[Case], qualities: dict | None = None, ct_cases: set | None = None):
    """(case, tidy rows) of every finished case, in case-id order, read from its own files one case at a time.
    ``qualities``, when given, receives case_id -> :func:`case_quality`; ``ct_cases`` the ids of the cases whose
    summary.json says their image is a CT (cases measured from a given segmentation)."""
    state = BatchState(outdir)
    for case in sorted(cases, key=lambda c: c.case_id):
        folder = state.case_dir(case)
        if not (folder / DONE).is_file():
            continue
        done = state.done_info(case) or {}
        case_rows = _case_rows(folder)
        summary = _summary(folder)
        quality = case_quality(summary, case_rows)
        if qualities is not None:
            qualities[case.case_id] = quality
        if ct_cases is not None and summary.get("modality") == "CT":
            ct_cases.add(case.case_id)
        rows = [{"case_id": case.case_id, "age": case.age, "sex": case.sex, **{key: row.get(key) for key in CSV_COLUMNS},
                 "label": row.get("label"), "model": done.get("model", "")} for row in case_rows]
        for row in rows:
            row["quality"] = row["quality"] or quality["status"]
        yield case, rows


def collect_rows(outdir: Path, cases: list[Case]) -> list[dict]:
    """Tidy rows of every finished case (all in memory: for small cohorts and tests)."""
    return [row for _, rows in iter_case_rows(outdir, cases) for row in rows]


class TableWriter:
    """``stem``.parquet and ``stem``.csv written in batches (memory stays small for any cohort size), renamed into
    place by :meth:`close` (atomic: readers see the old or the new table). ``types``: column -> float|int|bool.
    The CSV is Arrow's (RFC 4180: header and text quoted, empty field = missing, booleans true/false)."""

    def __init__(self, stem: Path, columns: tuple[str, ...], types: dict[str, str]):
        import pyarrow as pa
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq

        self.columns, self.types = columns, types
        arrow_types = {"float": pa.float64(), "int": pa.int32(), "bool": pa.bool_()}
        self.schema = pa.schema([(name, arrow_types.get(types.get(name, ""), pa.string())) for name in columns])
        self.paths = (stem.with_suffix(".parquet"), stem.with_suffix(".csv"))
        stem.parent.mkdir(parents=True, exist_ok=True)
        self.temporaries = []
        for path in self.paths:
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            os.close(handle)
            self.temporaries.append(temporary)
        self.parquet = pq.ParquetWriter(self.temporaries[0], self.schema)
        self.csv = pa_csv.CSVWriter(self.temporaries[1], self.schema, write_options=pa_csv.WriteOptions(quoting_style="needed"))
        self.rows = 0

    def _column(self, name: str, rows: list[dict]) -> list:
        kind = self.types.get(name)
        values = [row.get(name) for row in rows]
        if kind == "float":
            return [None if v is None or v == "" else float(v) for v in values]
        if kind == "int":
            return [None if v is None or v == "" else int(v) for v in values]
        if kind == "bool":  # JSON true/false, or the "true"/"false"/"" cells of a case's measurements.csv
            return [None if v is None or v == "" else v.strip().lower() == "true" if isinstance(v, str) else bool(v) for v in values]
        return [None if v is None else str(v) for v in values]

    def write(self, rows: list[dict]) -> None:
        import pyarrow as pa

        if not rows:
            return
        table = pa.Table.from_pydict({name: self._column(name, rows) for name in self.columns}, schema=self.schema)
        self.parquet.write_table(table)
        self.csv.write_table(table)
        self.rows += len(rows)

    def close(self) -> tuple[Path, Path]:
        self.parquet.close()
        self.csv.close()
        for temporary, path in zip(self.temporaries, self.paths):
            os.chmod(temporary, imageio.default_mode())
            os.replace(temporary, path)
        return self.paths

    def abort(self) -> None:
        for closing in (self.parquet.close, self.csv.close):
            try:
                closing()
            except Exception:
                pass
        for temporary in self.temporaries:
            if os.path.exists(temporary):
                os.unlink(temporary)


def write_table(rows: list[dict], columns: tuple[str, ...], types: dict[str, str], stem: Path) -> tuple[Path, Path]:
    """``stem``.parquet and ``stem``.csv from a list of rows (see :class:`TableWriter`)."""
    writer = TableWriter(stem, columns, types)
    try:
        writer.write(rows)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


MEASUREMENT_TYPES = {"age": "float", "value": "float", "label": "int", "flag": "bool"}


def rebuild_cohort(outdir: str | os.PathLike, cases: list[Case] | None = None, *, min_reference_n: int | None = None,
                   reference: str = "auto", report: bool = True, batch_cases: int = 500, include_flagged: bool = False) -> dict[str, Path]:
    """Rebuild measurements.*, normative.*, errors.csv and (``report``) report.html from the per-case outputs.

    The cohort table is streamed ``batch_cases`` cases at a time; only the disc rows that the normative comparison
    and the report use are kept in memory (about 20 per case). Cases whose quality status is not "ok" are in the
    table but not in the normative comparison or the report's statistics unless ``include_flagged``; CT cases never
    are (the references are MRI populations)."""
    from . import normative
    from .html import REPORT_PARAMETERS

    require_pyarrow()
    outdir = Path(outdir)
    if cases is None:
        cases = read_cases(outdir)
    kept: list[dict] = []
    pending: list[dict] = []
    qualities: dict[str, dict] = {}
    ct_cases: set[str] = set()
    writer = TableWriter(outdir / "measurements", TABLE_COLUMNS, MEASUREMENT_TYPES)
    try:
        for count, (case, rows) in enumerate(iter_case_rows(outdir, cases, qualities, ct_cases), start=1):
            pending.extend(rows)
            # the normative references are MRI populations: CT cases (a given segmentation) stay out of them
            if (include_flagged or qualities[case.case_id]["status"] == "ok") and case.case_id not in ct_cases:
                kept.extend(r for r in rows if r["structure"] == "disc" and r["parameter"] in REPORT_PARAMETERS and r["value"] is not None)
            if count % batch_cases == 0:
                writer.write(pending)
                pending = []
        writer.write(pending)
        outputs: dict[str, Path] = {}
        outputs["measurements_parquet"], outputs["measurements_csv"] = writer.close()
    except BaseException:
        writer.abort()
        raise
    comparison = normative.compare(kept, min_n=min_reference_n, reference=reference)
    outputs["normative_parquet"], outputs["normative_csv"] = write_table(comparison, normative.COLUMNS, normative.TYPES, outdir / "normative")
    outputs["errors"], _ = BatchState(outdir).write_errors_csv(cases)
    if report:
        from .html import write_cohort_report

        outputs["report"] = write_cohort_report(outdir, cases, kept, comparison, min_reference_n=min_reference_n or normative.MIN_REFERENCE_N,
                                                qualities=qualities, include_flagged=include_flagged)
    return outputs
