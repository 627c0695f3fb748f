"""What a batch has done so far, kept in OUTDIR itself so that any rerun (on any machine) can resume.

Guarantees (also in docs/batch.md):

* A case is *finished* when ``OUTDIR/cases/<case_id>/done.json`` exists. The worker writes every output into a
  private folder ``OUTDIR/cases/.<case_id>.partial-<random>``, writes ``done.json`` last, and then renames that
  folder to ``cases/<case_id>`` (one atomic rename on the same filesystem). A case folder is therefore either
  absent or complete; a kill at any moment leaves at most a ``.partial-`` folder, which the next run deletes.
* A rerun skips finished cases (their files are not touched) and runs every other case again; failed cases are
  retried unless ``--skip-failed`` is given.
* If two executions of the same case finish (Dask re-running a task after losing a worker), the first rename wins
  and the other result is discarded: never two copies.
* Failures are kept per case in ``OUTDIR/.errors/<case_id>.json`` (with the traceback) and summarised in
  ``errors.csv``, which is rewritten from those records after every failure and at the end: one line per case
  that failed and is not finished, never duplicates.
* Only one batch at a time may write into an OUTDIR (an advisory lock on ``OUTDIR/.lock``, released by the
  operating system when the process dies).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from .. import imageio
from ..errors import InputError
from .discover import Case, case_folder

DONE = "done.json"
CASES = "cases"
ERRORS_DIR = ".errors"
ERRORS_CSV = "errors.csv"
ERROR_COLUMNS = ("case_id", "path", "stage", "error", "time")
PARTIAL = ".partial-"


def one_line(error: BaseException | str, limit: int = 400) -> str:
    """A one-line reason: the first non-empty line of the message, with the exception type when it is not ours."""
    from ..errors import SpineAnalysisError

    if isinstance(error, str):
        text = error
    else:
        text = str(error)
        if not isinstance(error, SpineAnalysisError):
            text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = lines[0] if lines else "unknown error"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class BatchState:
    def __init__(self, outdir: str | os.PathLike):
        self.outdir = Path(outdir)
        self.cases_dir = self.outdir / CASES
        self.errors_dir = self.outdir / ERRORS_DIR

    # ---- finished cases
    def case_dir(self, case: Case | str) -> Path:
        return self.cases_dir / case_folder(case)

    def is_done(self, case: Case | str) -> bool:
        return (self.case_dir(case) / DONE).is_file()

    def done_info(self, case: Case | str) -> dict | None:
        try:
            return json.loads((self.case_dir(case) / DONE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def clean_partials(self) -> int:
        """Delete the private folders of cases that were running when a previous batch stopped."""
        count = 0
        if self.cases_dir.is_dir():
            for path in self.cases_dir.iterdir():
                if path.name.startswith(".") and (PARTIAL in path.name or ".old-" in path.name):
                    shutil.rmtree(path, ignore_errors=True)
                    count += 1
        return count

    # ---- failures
    def _error_path(self, case: Case | str) -> Path:
        return self.errors_dir / f"{case_folder(case)}.json"

    def record_error(self, case: Case, stage: str, message: str, traceback: str = "") -> None:
        record = {"case_id": case.case_id, "path": case.path, "stage": stage, "error": one_line(message), "time": now(), "traceback": traceback}
        imageio.write_text(json.dumps(record, indent=1) + "\n", self._error_path(case))

    def clear_error(self, case: Case | str) -> None:
        try:
            self._error_path(case).unlink()
        except FileNotFoundError:
            pass

    def error_of(self, case: Case | str) -> dict | None:
        try:
            return json.loads(self._error_path(case).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_errors_csv(self, cases: list[Case]) -> tuple[Path, int]:
        """errors.csv for the cases of this batch that failed and are not finished (header only when none)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(ERROR_COLUMNS)
        count = 0
        for case in sorted(cases, key=lambda c: c.case_id):
            if self.is_done(case):
                continue
            record = self.error_of(case)
            if record is not None:
                writer.writerow([record.get(key, "") for key in ERROR_COLUMNS])
                count += 1
        return imageio.write_text(buffer.getvalue(), self.outdir / ERRORS_CSV), count

    # ---- one batch at a time
    @contextmanager
    def lock(self):
        self.outdir.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock
            yield
            return
        handle = open(self.outdir / ".lock", "a+")
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                owner = handle.read().strip() or "another process"
                raise InputError(f"{self.outdir}: another batch is writing into this folder ({owner}); wait for it or use another -o") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {os.uname().nodename if hasattr(os, 'uname') else '?'} since {now()}\n")
            handle.flush()
            yield
        finally:
            handle.close()


# ---- worker side: private folder, then one rename
def partial_dir(outdir: Path, case: Case) -> Path:
    return outdir / CASES / f".{case_folder(case)}{PARTIAL}{uuid.uuid4().hex[:12]}"


def commit(work: Path, final: Path) -> bool:
    """Move a completed private folder into place. False when another execution of the case won the race."""
    try:
        os.rename(work, final)
        return True
    except OSError:
        if (final / DONE).is_file():
            shutil.rmtree(work, ignore_errors=True)
            return False
        if not final.exists():
            raise
    # an incomplete folder that a batch did not make (a user's copy, an older layout): set it aside, then rename
    aside = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(final, aside)
    os.rename(work, final)
    shutil.rmtree(aside, ignore_errors=True)
    return True
