"""Keep freed memory in the process for the next allocation instead of handing it back to the kernel (glibc only).

Segmenting a whole scan allocates and frees the network's layer outputs hundreds of times (tens of MB each on a
381 x 381 x 77 scan). glibc serves every block above its mmap threshold (dynamic, at most 32 MiB) with a fresh
``mmap`` and unmaps it on ``free``, so the next layer's output is faulted in again, 4 KiB page by page, and the
kernel zeroes each page. Measured 2026-12-07 on the project's 2-core VM (``Testing/Benchmarks`` notes in
docs/batch.md, "Where a case's time goes"): about one million minor page faults and 2-3 s of system time per
381 x 381 x 77 case, a third of its wall time; with the heap kept, 50,000 faults and 0.2 s. The price is a higher
resident size: freed memory stays with the process (peak RSS over the 15 validation scans in one process 1.80 ->
1.90 GB), which suits a process that runs one case and exits, or a batch worker that runs the next case at once.

Only the command line's case commands and batch workers call this; the library never does it on import, because
the Slicer module and the review server import it into long-running processes whose memory use is not ours to
change. The allocator's placement of blocks changes no computed value: outputs are identical (checked on the 15
validation scans: labels voxels, measurements, landmarks, summary).
"""

from __future__ import annotations

import ctypes
import platform
import sys

#: mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: blocks below this come from the heap and are reused after ``free`` (layer outputs of a 381 x 381 x 77 case are up
#: to 81 MB, 15 of 3648 above 32 MiB); larger ones are still mapped and unmapped
MMAP_THRESHOLD_BYTES = 1 << 30
#: never give the top of the heap back (glibc's default 128 KiB would return the freed layer outputs at once)
TRIM_THRESHOLD_BYTES = 2**31 - 1

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
    _kept = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    return _kept
