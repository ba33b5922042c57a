"""Timing helpers for benchmark scripts: synchronised wall-clock per call, peak memory, and the device's
float32 precision settings (TF32)."""
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


def _rss_bytes() -> int:
    """The process's resident set size now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


class _RssSampler(threading.Thread):
    """Polls the resident set size every `interval` seconds until stopped; keeps the largest value."""

    def __init__(self, interval: float = 0.002):
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, _rss_bytes(), threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes())

    def stop(self) -> int:
        """Stop polling; the largest resident set size seen (one last reading included)."""
        self._stop_event.set()
        self.join()
        return max(self.peak, _rss_bytes())


class PeakMemory:
    """Peak memory of a block: torch.cuda.max_memory_allocated on CUDA (reset on entry); on CPU the largest
    resident set size seen during the block (polled every 2 ms) above the one at entry."""

    def __init__(self, device: torch.device):
        self.device, self.bytes, self._base = device, 0, 0
        self.kind = "cuda max_memory_allocated" if device.type == "cuda" else "cpu peak RSS above entry (polled)"
        self._sampler: _RssSampler | None = None

    def __enter__(self) -> "PeakMemory":
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._base = _rss_bytes()
            self._sampler = _RssSampler()
            self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self.bytes = max(0, self._sampler.stop() - self._base)


def precision_settings() -> dict:
    """The TF32 flags in effect (legacy allow_tf32 and, where present, fp32_precision) and cudnn.benchmark."""
    out = {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
           "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
           "float32_matmul_precision": torch.get_float32_matmul_precision(),
           "cudnn.benchmark": torch.backends.cudnn.benchmark}
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        out["cudnn.conv.fp32_precision"] = conv.fp32_precision
    return out
