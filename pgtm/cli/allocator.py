"""Keep freed memory in the process on glibc, so that each training step does not hand its
large tensors back to the kernel and fault them in again.

With glibc's defaults every allocation above the (dynamic) mmap threshold gets its own
``mmap`` and is unmapped on ``free``; a GTM step allocates and frees the same large activations
every time, so the kernel zeroes fresh pages for them at every step (a third or more of a CPU
step's time went to page faults in ``benchmarks/bench_step.py``). :func:`keep_freed_memory`
sets glibc's ``M_MMAP_MAX = 0`` (no per-allocation mmap: large blocks come from the heap) and
``M_TRIM_THRESHOLD`` to 2 GiB, the largest ``mallopt`` takes (the heap is trimmed only above
that), like the environment variables ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` but from
inside the process. The
price: the resident size stays at its peak until the process ends. ``pgtm`` commands call it
at start unless ``PGTM_MALLOC=default``; elsewhere (not glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: mallopt parameters of glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes a C int
ENVIRONMENT_SWITCH = "PGTM_MALLOC"


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as described above; ``True`` when it was applied (glibc found,
    ``PGTM_MALLOC`` not set to ``default``)."""
    if os.environ.get(ENVIRONMENT_SWITCH, "") == "default":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
