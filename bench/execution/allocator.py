"""The CPU allocator setting of the suite's processes: glibc keeps freed large blocks for reuse (mallopt) instead of
mapping every block above its 32 MiB threshold afresh. A 20-way query pass makes 60 MB activations; mapped afresh,
each faults its pages in on first touch, and that is about a third of a CPU meta-training step
(bench/benchmarks/peers.py measures the step with this setting on, for the suite and the peers alike: it is per
process). No effect on any number; a no-op where the C library is not glibc. The task processes
(bench/execution/task_processes.py), which this process starts, also get WORKER_TUNABLES: glibc's per-thread cache and
fast bins off, so that freed small blocks coalesce instead of pinning holes between activations (measured on a 5-way
meta-dropout step: about 15 MiB less resident per process, no measurable time; settable only when a process starts, so
not for this one)."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3        # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 1 << 30                           # blocks up to 1 GiB come from the reusable heap
TRIM_THRESHOLD = 1 << 30                           # free memory above 1 GiB at the heap's top goes back to the OS
WORKER_TUNABLES = "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0"   # read by glibc at a process's start


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


def worker_tunables(environ: dict[str, str]) -> str:
    """GLIBC_TUNABLES for a task process: WORKER_TUNABLES, then any the user set (theirs win: glibc takes the
    last value of a tunable)."""
    return ":".join(filter(None, [WORKER_TUNABLES, environ.get("GLIBC_TUNABLES")]))
