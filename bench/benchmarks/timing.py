"""Timing helpers for benchmark scripts: synchronised wall-clock per call and peak memory."""
from __future__ import annotations

import resource
import statistics
import threading
import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def call_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call of fn, synchronised before and after."""
    synchronize(device)
    began = time.perf_counter()
    fn()
    synchronize(device)
    return 1000 * (time.perf_counter() - began)


def median_ms(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> dict:
    """Median (and min, max, count) of `iters` synchronised calls of fn after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = [call_ms(fn, device) for _ in range(iters)]
    return {"ms_median": statistics.median(times), "ms_min": min(times), "ms_max": max(times), "iters": iters,
            "warmup": warmup}


def _rss_bytes(pids: tuple[int, ...] = ()) -> int:
    """The resident set size now of this process plus the processes `pids` (Linux /proc; 0 elsewhere)."""
    total = 0
    for pid in ("self", *pids):
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * resource.getpagesize()
        except OSError:
            pass
    return total


class _RssSampler(threading.Thread):
    """Polls the resident set size (of this process and `pids`) every `interval` seconds until stopped; keeps
    the largest value."""

    def __init__(self, pids: tuple[int, ...] = (), interval: float = 0.002):
        super().__init__(daemon=True)
        self.pids, self.interval, self._stop_event = pids, interval, threading.Event()
        self.peak = _rss_bytes(pids)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes(self.pids))

    def stop(self) -> int:
        """Stop polling; the largest resident set size seen (one last reading included)."""
        self._stop_event.set()
        self.join()
        return max(self.peak, _rss_bytes(self.pids))


class PeakMemory:
    """Peak memory of a block: torch.cuda.max_memory_allocated on CUDA (reset on entry); on CPU the largest
    resident set size seen during the block (polled every 2 ms) above the one at entry, of this process plus the
    processes `pids` (task processes) together."""

    def __init__(self, device: torch.device, pids: tuple[int, ...] = ()):
        self.device, self.pids, self.bytes, self._base = device, pids, 0, 0
        self.kind = "cuda max_memory_allocated" if device.type == "cuda" else "cpu peak RSS above entry (polled)"
        self._sampler: _RssSampler | None = None

    def __enter__(self) -> "PeakMemory":
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._base = _rss_bytes(self.pids)
            self._sampler = _RssSampler(self.pids)
            self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self.bytes = max(0, self._sampler.stop() - self._base)
