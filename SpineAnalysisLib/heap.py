"""Keep freed memory in the process for the next allocation instead of handing it back to the kernel (glibc only).

Segmenting a whole scan allocates and frees the network's layer outputs hundreds of times (up to 81 MB each on a
381 x 381 x 77 scan). glibc serves a block above its mmap threshold (dynamic, at most 32 MiB) with a fresh ``mmap``
and unmaps it on ``free``, so the next layer's output is faulted in again page by page and the kernel zeroes each
page: about one million minor faults and 3 s of system time per 381 x 381 x 77 case (VB2_13, 6.2 s wall). Dask's
nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also turns the dynamic threshold off: every block
over 128 KiB is then mapped afresh, 5.4 million faults and 10 s of system time for the same case. With the heap kept:
under 0.13 million faults and 0.3 s; the batch benchmark went from 560 to 1422 cases/h on 2 cores
(docs/batch.md, "Where a case's time goes", 2026-12-07). All threads share the main heap (:data:`ARENAS`), because
Dask runs a case in a worker thread. The price is resident memory: freed memory stays with the
process (peak RSS over the 15 validation scans in one process 1.80 -> 1.90 GB), which suits a process that runs one
case and exits, or a batch worker that runs the next case at once.

Only the command line's analyze/segment and batch workers call this; the library never does it on import, because
the Slicer module and the review server import it into long-running processes whose memory use is not ours to
change. Where blocks are placed changes no computed value: outputs are identical (the 15 validation scans: label
voxels, measurements, landmarks, summary).
"""

from __future__ import annotations

import ctypes
import platform
import sys

#: mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
#: blocks below this come from the heap and are reused after ``free`` (layer outputs of a 381 x 381 x 77 case are up
#: to 81 MB, 15 of 3648 above 32 MiB); larger ones are still mapped and unmapped
MMAP_THRESHOLD_BYTES = 1 << 30
#: never give the top of the heap back (glibc's default 128 KiB would return the freed layer outputs at once)
TRIM_THRESHOLD_BYTES = 2**31 - 1
#: every thread allocates from the one main heap. Dask runs a case in a worker thread, which glibc would give an arena
#: of its own whose heaps hold at most 64 MiB: larger layer outputs were mapped afresh there whatever the threshold
#: (VB2_13 in a thread, 2026-12-07: 4.7-5.5 s, system time 1.1-2.2 s; with one arena 4.0-4.5 s, 0.2-0.8 s). Arenas
#: made before the call stay. A worker runs one case at a time; torch's compute threads seldom allocate (user time unchanged)
ARENAS = 1

_kept = False


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse (see the module docstring); True when it is in effect (also when
    an earlier call set it), False on other C libraries and platforms, where nothing changes."""
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _kept = all([mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES), mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
                 mallopt(M_ARENA_MAX, ARENAS)])
    return _kept
