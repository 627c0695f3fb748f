"""Freed memory is kept for the next allocation in case commands and batch workers (SpineAnalysisLib.heap).

Each check runs in a fresh interpreter (the allocator setting is process-wide and cannot be undone) and counts the
minor page faults of a 64 MiB block that is written, freed, allocated and written again: glibc's default maps a
block that size afresh, so the second write faults every page in again (the system time measured on whole scans);
with the heap kept, it reuses the pages already faulted in. Batch workers are checked under the setting Dask's nanny
gives them, which made the faults five times as many (docs/batch.md, "Where a case's time goes").
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = (64 << 20) // 4096

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                reason="the policy applies to glibc's malloc only")

REFAULTS = """
import ctypes, resource, threading
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = {mib} << 20
faults = []
def cycle():
    block = libc.malloc(size); ctypes.memset(block, 1, size); libc.free(block)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size); ctypes.memset(block, 1, size)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
{run}
print(faults[0] * 64 // {mib})
"""
IN_MAIN_THREAD = "cycle()"
#: as Dask runs a task; 96 MiB is more than a thread arena's heap holds (64 MiB)
IN_A_NEW_THREAD = "worker = threading.Thread(target=cycle); worker.start(); worker.join()"


#: what Dask's nanny puts in every worker's environment (distributed.yaml, nanny.pre-spawn-environ): glibc then trims at
#: 64 KiB and maps every block over 128 KiB afresh (a 381 x 381 x 77 case: 5.4 M faults, 10 s of system time)
DASK_WORKER_ENV = {"MALLOC_TRIM_THRESHOLD_": "65536"}


def _refaulted_pages(setup: str, env: dict | None = None, thread: bool = False) -> int:
    """Pages faulted in again when a freed block is allocated and written again, per 64 MiB."""
    cycle = REFAULTS.format(mib=96, run=IN_A_NEW_THREAD) if thread else REFAULTS.format(mib=64, run=IN_MAIN_THREAD)
    probe = f"import sys; sys.path.insert(0, {str(REPO)!r})\n{setup}\n{cycle}"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120,
                          env={**environment, **(env or {})})
    return int(done.stdout.split()[-1])


def test_a_freed_block_is_faulted_in_again_by_default_and_reused_once_kept():
    assert _refaulted_pages("") > PAGES // 2  # the cost exists on this C library
    assert _refaulted_pages("from SpineAnalysisLib.heap import keep_freed_memory\nassert keep_freed_memory()") < PAGES // 50


def test_a_batch_worker_keeps_freed_memory_once_it_is_prepared_also_under_dasks_trim_setting_and_in_a_task_thread():
    assert _refaulted_pages("", DASK_WORKER_ENV) > PAGES // 2
    assert _refaulted_pages("", DASK_WORKER_ENV, thread=True) > PAGES // 2
    setup = "from SpineAnalysisLib.batch.runner import prepare_worker\nprepare_worker({'device': 'cpu'})"
    assert _refaulted_pages(setup, DASK_WORKER_ENV) < PAGES // 50
    assert _refaulted_pages(setup, DASK_WORKER_ENV, thread=True) < PAGES // 50
