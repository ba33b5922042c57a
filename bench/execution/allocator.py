"""The CPU allocator setting of the suite's processes: glibc keeps freed large blocks for reuse (mallopt) instead of
mapping every block above its 32 MiB threshold afresh. A 20-way query pass makes 60 MB activations; mapped afresh,
each faults its pages in on first touch (what it gains on a step: docs/speed.md). No effect on any number; a no-op
where the C library is not glibc; per process, so bench/benchmarks/peers.py's peers run with it too."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3        # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 1 << 30                           # blocks up to 1 GiB come from the reusable heap
TRIM_THRESHOLD = 1 << 30                           # free memory above 1 GiB at the heap's top goes back to the OS


@functools.cache
def retain_freed_memory() -> str:
    """Apply the setting once per process; returns what holds ('glibc: reuse blocks up to 1 GiB' or why not)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return f"default (no mallopt in {name or 'the C library'})"
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "default (mallopt refused the thresholds)"
    return f"glibc: reuse freed blocks up to {MMAP_THRESHOLD >> 20} MiB"
