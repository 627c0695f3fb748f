"""Running a batch on Dask: a local cluster on this machine by default, or an existing cluster (``scheduler``).

One Dask task per case runs :func:`SpineAnalysisLib.pipeline.analyze` in a worker process and commits the case's
folder (see :mod:`.state`). Each worker process loads the model once (:class:`ModelPlugin` preloads it when the
worker starts; ``inference.get_network`` keeps it for every later case) on its own device (``device="auto"``:
the worker's CUDA GPU when it has one). The driver collects results as they finish, so a kill loses at most
the cases that were running, and prints a progress line with ETA on stderr.

Errors that concern one case (unreadable file, no spine found, a crash in the measurements, a worker killed
three times on that case) are recorded and the batch goes on. Errors that concern the setup (model missing or
corrupt on a worker, OUTDIR not visible from a worker, scheduler unreachable) stop the batch with one line:
every case would fail the same way.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__, imageio
from ..errors import InputError, ModelError, SpineAnalysisError
from ..outputs import check_output_folder
from ..settings import RunSettings
from .discover import Case, case_folder, discover_cases
from .state import DONE, BatchState, commit, now, one_line, partial_dir

LOGGER = logging.getLogger("SpineAnalysisLib.batch")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class SetupError(SpineAnalysisError):
    """A problem of the cluster or environment (not of one case): the batch stops."""


# ------------------------------------------------------------------ worker side
_MODEL_LOCK = threading.Lock()
_MODEL_LOADS = 0
#: one case at a time per worker process, also on workers with several threads (pyplot and torch's thread
#: count are process-wide): scale with worker processes, not threads
_CASE_LOCK = threading.Lock()


def _select_gpu(worker_name) -> None:
    """Spread local workers over the GPUs of a multi-GPU machine (worker i -> GPU i mod count).

    Workers started by dask-cuda (or with CUDA_VISIBLE_DEVICES set per worker) see one GPU and are left alone."""
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count > 1 and str(worker_name).isdigit():
            torch.cuda.set_device(int(worker_name) % count)
    except Exception:  # a broken CUDA setup shows up when the model is loaded
        pass


def prepare_worker(options: dict) -> tuple[str, str]:
    """Load the model into this process's cache once and keep freed memory for the next case (:mod:`..heap`);
    (model label, device type)."""
    global _MODEL_LOADS
    from ..heap import keep_freed_memory
    from ..inference import get_network, network_loaded, pick_device
    from ..model.store import find_model

    keep_freed_memory()
    info = find_model(options.get("model"))
    device = pick_device(options.get("device") or "auto")
    with _MODEL_LOCK:
        if not network_loaded(info, device):
            _MODEL_LOADS += 1
        get_network(info, device)
    return info.label, device.type


try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # dask not installed: the module still imports (discovery, cohort report)
    WorkerPlugin = object


class ModelPlugin(WorkerPlugin):
    """Preloads the model in each worker when it starts (also in workers that join later)."""

    name = "spineanalysis-model"

    def __init__(self, options: dict):
        self.options = dict(options)

    def setup(self, worker):
        _select_gpu(getattr(worker, "name", None))
        try:
            prepare_worker(self.options)
        except Exception as error:  # reported by the first case that runs on this worker
            LOGGER.warning("spineanalysis: could not preload the model on %s: %s", getattr(worker, "address", "?"), one_line(error))


def run_case(case_data: dict, outdir: str, options: dict) -> dict:
    """Analyse one case in a worker and commit its folder. Returns a small status dict for the driver."""
    started = time.time()
    case = Case.from_dict(case_data)
    outdir = Path(outdir)
    host = os.uname().nodename if hasattr(os, "uname") else "?"
    if not (outdir / "batch.json").is_file():
        raise SetupError(f"{outdir} is not visible on worker host {host}: OUTDIR must be on a filesystem shared by the driver and all workers")
    model_label, device = prepare_worker(options)  # setup errors (ModelError, no GPU) stop the batch
    final = outdir / "cases" / case_folder(case)
    status = {"case_id": case.case_id, "pid": os.getpid(), "host": host, "model_loads": _MODEL_LOADS, "device": device}
    with _CASE_LOCK:
        return _run_locked(case, outdir, options, started, final, status, model_label, device, host)


def _run_locked(case: Case, outdir: Path, options: dict, started: float, final: Path, status: dict, model_label: str, device: str,
                host: str) -> dict:
    if (final / DONE).is_file():  # finished meanwhile by another execution (a task re-run after a lost worker)
        return {**status, "status": "done", "seconds": 0.0}
    work = partial_dir(outdir, case)
    try:
        from ..pipeline import analyze
        from .html import write_case_page

        if case.labels:  # a given segmentation (labels column): measured, not segmented
            from ..measure_segmentation import measure_files

            summary = measure_files(case.path, case.labels, work, label_scheme=case.label_scheme, bodies_path=case.bodies or None,
                                    sex=case.sex, age=case.age).summary()
            summary["model"] = "none (segmentation given)"
            imageio.write_text(json.dumps(summary, indent=1) + "\n", work / "summary.json")
        else:
            analyze(case.path, work, model=options.get("model"), device=options.get("device") or "auto", sex=case.sex, age=case.age,
                    threads=options.get("threads"), fast=bool(options.get("fast")))
            summary = json.loads((work / "summary.json").read_text(encoding="utf-8"))
        rows = json.loads((work / "measurements.json").read_text(encoding="utf-8"))
        write_case_page(work, case.case_id, case.path, rows, summary, case.age, case.sex)
        try:
            stat = os.stat(case.path)
            source = {"size": stat.st_size, "mtime": stat.st_mtime}
        except OSError:
            source = {}
        seconds = time.time() - started
        done = {"case_id": case.case_id, "path": case.path, "age": case.age, "sex": case.sex, "model": model_label, "device": device,
                "seconds": round(seconds, 2), "host": host, "pid": os.getpid(), "model_loads_in_worker": _MODEL_LOADS,
                "finished": now(), "spineanalysis": __version__, "source": source, "levels": summary.get("levels", [])}
        imageio.write_text(json.dumps(done, indent=1) + "\n", work / DONE)
        commit(work, final)
        BatchState(outdir).clear_error(case)
        return {**status, "status": "done", "seconds": seconds}
    except ModelError:
        shutil.rmtree(work, ignore_errors=True)
        raise
    except Exception as error:
        shutil.rmtree(work, ignore_errors=True)
        stage = "input" if isinstance(error, InputError) else "processing"
        return {**status, "status": "failed", "stage": stage, "error": one_line(error), "traceback": traceback.format_exc(),
                "seconds": time.time() - started}


# ------------------------------------------------------------------ driver side
@dataclass
class BatchResult:
    outdir: Path
    cases: int
    finished: int  # finished cases in OUTDIR after this run (of this case list)
    skipped: int  # already finished before this run
    succeeded: int  # finished by this run
    failed: int  # failed (this run, or earlier and not retried)
    workers: int
    seconds: float
    processing_seconds: float  # from the first task submitted to the last result
    outputs: dict[str, Path] = field(default_factory=dict)
    #: quality status (ok / review / failed) -> number of finished cases with it
    qualities: dict[str, int] = field(default_factory=dict)

    @property
    def cases_per_hour(self) -> float | None:
        ran = self.succeeded
        return 3600.0 * ran / self.processing_seconds if ran and self.processing_seconds > 0 else None

    @property
    def exit_code(self) -> int:
        return 0 if self.finished == self.cases else 1


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """A plain-text progress bar with rate and ETA (``\\r``-updated on a terminal, one line per update otherwise)."""

    def __init__(self, total: int, previously_done: int, stream=None, interval: float = 10.0, width: int = 24):
        self.total, self.previously_done = total, previously_done
        self.stream = stream
        self.interval, self.width = interval, width
        self.started = time.time()
        self.last_print = 0.0
        self.tty = bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())
        self.done = self.failed = 0

    def line(self) -> str:
        finished = self.done + self.failed
        fraction = finished / self.total if self.total else 1.0
        filled = int(round(self.width * fraction))
        elapsed = time.time() - self.started
        text = (f"batch [{'#' * filled}{'.' * (self.width - filled)}] {finished}/{self.total} ({100 * fraction:.0f}%)"
                f" | {self.done} done, {self.failed} failed" + (f", {self.previously_done} finished earlier" if self.previously_done else ""))
        if finished and elapsed > 0:
            rate = finished / elapsed
            remaining = self.total - finished
            text += f" | {3600 * rate:.0f} cases/h | " + (f"ETA {_format_duration(remaining / rate)}" if remaining else f"took {_format_duration(elapsed)}")
        else:
            text += " | ETA --"
        return text

    def update(self, done: int | None = None, failed: int | None = None, force: bool = False) -> None:
        if done is not None:
            self.done = done
        if failed is not None:
            self.failed = failed
        if self.stream is None:
            return
        moment = time.time()
        last = self.done + self.failed == self.total
        if self.tty:
            if force or last or moment - self.last_print >= 0.2:
                self.stream.write("\r" + self.line() + ("\n" if last else ""))
                self.stream.flush()
                self.last_print = moment
        elif force or last or self.last_print == 0.0 or moment - self.last_print >= self.interval:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self.last_print = moment


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


#: memory to allow per local worker process: its peak resident size over the 15 validation scans (up to 381 x 381 x 77)
#: was 1.81 GB (1 torch thread) to 1.90 GB (2) with freed memory kept for the next case (:mod:`..heap`), 2.04 GB run in
#: a thread as Dask does (all threads on one heap), 1.80 GB before (2026-12-07)
WORKER_MEMORY_BYTES = 2 * 2**30


def default_workers(cases: int) -> int:
    """One worker process per CPU core, at most one per :data:`WORKER_MEMORY_BYTES` of memory, at most 4 per GPU when
    there are GPUs (each process holds a CUDA context), at most one per case."""
    cpus = _available_cpus()
    try:
        import psutil

        by_memory = max(1, int(psutil.virtual_memory().total / WORKER_MEMORY_BYTES))
    except ImportError:
        by_memory = cpus
    limit = min(cases, cpus, by_memory)
    try:
        import torch

        if torch.cuda.is_available():
            limit = min(limit, 4 * torch.cuda.device_count())
    except ImportError:
        pass
    return max(1, limit)


@contextmanager
def dask_client(scheduler: str | None, workers: int, threads: int | None):
    """A Dask client on ``scheduler``, or on a local cluster of ``workers`` processes on 127.0.0.1 (closed after)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SetupError("batch runs need dask and distributed: pip install 'spineanalysis[batch]' (or -r requirements.txt)") from None
    if scheduler:
        try:
            if scheduler.endswith(".json") and os.path.isfile(scheduler):  # dask scheduler --scheduler-file, dask-mpi
                client = Client(scheduler_file=scheduler, timeout="30s")
            else:
                client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as error:
            raise SetupError(f"cannot reach the Dask scheduler at {scheduler}: {one_line(error)}") from None
        try:
            yield client
        finally:
            client.close()
        return
    pythonpath = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": pythonpath}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    # dashboard_address=None turns the dashboard off, but the scheduler still serves its health routes on port 8787 (a
    # second batch on the machine then printed a 4-line "Port 8787 is already in use" warning): any free local port
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.ERROR, env=env)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (Slurm time limit, kill) stops the batch like Ctrl-C: the cluster is closed, finished cases are kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_batch(
    source: str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    model: str | None = None,
    device: str = "auto",
    fast: bool = False,
    pattern: str | None = None,
    retry_failed: bool = True,
    min_reference_n: int | None = None,
    reference: str = "auto",
    report: bool = True,
    progress=sys.stderr,
    progress_interval: float = 10.0,
) -> BatchResult:
    """Run (or resume) a batch; see the package docstring and docs/batch.md.

    ``scheduler``: address of an existing Dask scheduler (``tcp://host:8786``); None starts a local cluster of
    ``workers`` processes (default: :func:`default_workers`) with ``threads`` torch threads each (default: the
    cores divided among the workers). ``progress``: stream for the progress line (None: silent).
    """
    from .cohort import rebuild_cohort, require_pyarrow, write_case_list

    started = time.time()
    RunSettings(model=model, device=device, threads=threads, fast=fast)
    if workers is not None and workers < 1:
        raise InputError(f"workers: expected at least 1, got {workers}")
    if min_reference_n is not None and min_reference_n < 1:
        raise InputError(f"min-reference-n: expected at least 1, got {min_reference_n}")
    outdir = check_output_folder(Path(outdir).expanduser().resolve(), resume_marker="batch.json")  # only looks
    if not scheduler:  # local workers use this machine's model store and devices: a mistake is one line here, before OUTDIR
        from ..model.store import find_model

        find_model(model)
        if device not in ("auto", "cpu"):
            from ..inference import pick_device

            pick_device(device)
    require_pyarrow()
    state = BatchState(outdir)
    with state.lock():
        cases = discover_cases(source, exclude=outdir, pattern=pattern)
        write_case_list(outdir, cases)
        state.clean_partials()
        finished_before = [c for c in cases if state.is_done(c)]
        todo: list[Case] = []
        for case in cases:
            if state.is_done(case):
                continue
            if case.problem:
                state.record_error(case, "input", case.problem)
            elif retry_failed or state.error_of(case) is None:
                todo.append(case)
        n_workers = 0
        options = {"model": model, "device": device, "threads": threads, "fast": fast}
        if not scheduler and todo:
            n_workers = max(1, min(workers or default_workers(len(todo)), len(todo)))
            if not threads:
                options["threads"] = max(1, _available_cpus() // n_workers)
        batch_info = {"source": str(Path(source).expanduser().resolve()), "outdir": str(outdir), "scheduler": scheduler or "local",
                      "workers": n_workers or None, "options": options, "pattern": pattern, "cases": len(cases),
                      "spineanalysis": __version__, "started": now()}
        imageio.write_text(json.dumps(batch_info, indent=1) + "\n", outdir / "batch.json")
        state.write_errors_csv(cases)
        if progress is not None:
            progress.write(f"batch: {len(cases)} cases, {len(finished_before)} finished earlier, {len(todo)} to run"
                           + (f" on {scheduler}" if scheduler else "" if not todo else f" on {n_workers} local worker process{'es' if n_workers > 1 else ''}"
                              f" x {options['threads']} thread{'s' if options['threads'] > 1 else ''}") + "\n")
            progress.flush()
        succeeded = failed = 0
        processing_started = processing_ended = time.time()
        if todo:
            with _sigterm_as_interrupt(), dask_client(scheduler, n_workers, options["threads"]) as client:
                if scheduler:
                    described = client.scheduler_info().get("workers", {})
                    n_workers = len(described)
                    threaded = sorted({w.get("nthreads", 1) for w in described.values()} - {1})
                    if threaded and progress is not None:
                        progress.write(f"batch: note: workers with {threaded[-1]} threads run one case at a time each; start them with "
                                       "--nthreads 1 and more processes (--nworkers) for parallel cases\n")
                client.register_plugin(ModelPlugin(options))
                bar = Progress(len(todo), len(finished_before), progress, interval=progress_interval)
                processing_started = time.time()
                succeeded, failed = _collect(client, todo, outdir, options, state, cases, bar, local=not scheduler)
                processing_ended = time.time()
        outputs = rebuild_cohort(outdir, cases, min_reference_n=min_reference_n, reference=reference, report=report)
    from .cohort import case_status

    done = [c for c in cases if state.is_done(c)]
    qualities = Counter(case_status(state.case_dir(c)) for c in done)
    return BatchResult(outdir, len(cases), len(done), len(finished_before), succeeded, len(cases) - len(done), n_workers,
                       time.time() - started, processing_ended - processing_started, outputs, dict(qualities))


def _worker_error(error: BaseException) -> str:
    """errors.csv's reason for a task that ended without a result. Dask's KilledWorker text (400 characters about task
    keys, worker addresses and a web page) is said in the user's terms."""
    if type(error).__name__ == "KilledWorker":
        tries = getattr(error, "allowed_failures", None)
        times = ("once" if tries == 0 else f"{tries + 1} times") if isinstance(tries, int) else "repeatedly"
        return (f"the worker process died while analysing this case, {times} (a crash or too little memory); "
                "run 'spineanalysis analyze' on this image alone to see the error")
    return one_line(error)


#: the local cluster is given up when it has had no worker process for this long while cases wait (seen once: workers
#: that died and whose restart failed left the batch waiting for ever, silently); a restart importing torch takes 5-60 s
NO_WORKER_LIMIT_S = 120.0
#: how often the driver looks at the workers while no case finishes
POLL_S = 5.0
#: how often the driver looks for finished cases
RESULT_POLL_S = 0.2


def _no_worker_since(client, since: float | None) -> float | None:
    """When the cluster was first seen without a worker (None: it has workers); a :class:`SetupError` once that has
    lasted :data:`NO_WORKER_LIMIT_S`."""
    if client.scheduler_info().get("workers"):
        return None
    since = since or time.time()
    if time.time() - since >= NO_WORKER_LIMIT_S:
        raise SetupError(f"no worker process has been running for {NO_WORKER_LIMIT_S:.0f} s (they stopped and were not restarted); "
                         "finished cases are kept: run the same command again to resume")
    return since


def _collect(client, todo: list[Case], outdir: Path, options: dict, state: BatchState, cases: list[Case], bar: Progress,
             local: bool = True) -> tuple[int, int]:
    """Submit ``todo`` and record each result as it comes. ``local``: the batch's own cluster, which nobody else will
    give new workers (a --scheduler cluster may legitimately scale up from none).

    Finished futures are found by polling their local state (``Future.done``), not with ``distributed.wait``: when a
    worker died, ``wait`` with a timeout sometimes raised ``UnboundLocalError`` from inside distributed's ``sync``
    (2026.8.0: its internal await was cancelled, a BaseException its error path does not keep), which ended the
    batch (seen once in ``test_a_case_that_kills_its_worker_is_recorded_in_plain_words``)."""
    token = uuid.uuid4().hex[:8]
    futures = {}
    for case in todo:
        future = client.submit(run_case, case.to_dict(), str(outdir), options, key=f"spineanalysis-{case_folder(case)}-{token}", pure=False)
        futures[future] = case
    succeeded = failed = 0
    last_errors_csv = 0.0
    no_worker_since = None
    idle_since = time.monotonic()  # when a result last came (or the batch started)
    try:
        while futures:
            finished = [future for future in futures if future.done()]
            if not finished:
                time.sleep(RESULT_POLL_S)
                if local and time.monotonic() - idle_since >= POLL_S:
                    idle_since = time.monotonic()
                    no_worker_since = _no_worker_since(client, no_worker_since)
                continue
            idle_since, no_worker_since = time.monotonic(), None
            for future in finished:
                case = futures.pop(future)
                try:
                    result = future.result()
                except SpineAnalysisError:
                    raise  # setup problem (model, OUTDIR not shared): every case would fail the same way
                except Exception as error:  # KilledWorker (the case crashed its worker repeatedly), lost connection...
                    result = {"status": "failed", "stage": "worker", "error": _worker_error(error), "traceback": ""}
                if result["status"] == "done":
                    succeeded += 1
                    state.clear_error(case)
                else:
                    failed += 1
                    state.record_error(case, result.get("stage", "processing"), result.get("error", ""), result.get("traceback", ""))
                    if time.time() - last_errors_csv > 5 or not futures:
                        state.write_errors_csv(cases)
                        last_errors_csv = time.time()
                bar.update(succeeded, failed)
    finally:
        if futures:
            client.cancel(list(futures))
    state.write_errors_csv(cases)
    return succeeded, failed
