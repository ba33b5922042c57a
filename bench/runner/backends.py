"""Running cells: local processes over the machine's devices (joblib), or a Ray cluster; the same cell
function and results folder either way, with a progress display of cells done / running / left."""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace

import torch
from tqdm import tqdm as plain_tqdm
from tqdm.auto import tqdm

from bench.util.devices import check_device
from bench.util.errors import UserError
from bench.runner.run_cell import RunOptions, run_cell


def local_devices(device: str, jobs: int | None) -> list[str]:
    """One device per worker: each GPU once ('cuda'), or `jobs` CPU workers ('cpu'; default: one per core), or an
    explicit list; a device this machine lacks is a UserError."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        check_device(device)
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if device == "cpu":
        return ["cpu"] * (jobs or usable_cores())
    devices = [d.strip() for d in device.split(",")]
    for d in devices:
        check_device(d)
    return devices


def usable_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _run_in_worker(cell: dict, options: RunOptions, device: str) -> dict:
    """run_cell in a joblib worker. Ctrl-C reaches the whole process group: the worker ignores it, and the parent,
    interrupted, kills the workers. So tqdm gets a thread lock, not its default multiprocessing one: a named semaphore
    that a killed worker leaves behind ("leaked semaphore objects" at exit); the workers show no bars anyway."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    plain_tqdm.set_lock(threading.RLock())
    return run_cell(cell, options, device)


def _local(cells: list[dict], options: RunOptions, devices: list[str]) -> Iterator[dict]:
    from joblib import Parallel, delayed
    if len(devices) == 1:                       # one worker: in this process, with each cell's own progress
        for cell in cells:
            yield run_cell(cell, options, devices[0])
        return
    quiet = replace(options, progress="lines" if options.progress == "lines" else "none")
    jobs = [delayed(_run_in_worker)(cell, quiet, devices[i % len(devices)]) for i, cell in enumerate(cells)]
    yield from Parallel(n_jobs=len(devices), return_as="generator_unordered")(jobs)


def _ray(cells: list[dict], options: RunOptions, address: str | None, gpus_per_cell: float) -> Iterator[dict]:
    try:
        import ray
    except ImportError:
        raise UserError("the Ray backend needs ray: pip install -e '.[ray]'") from None
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(num_gpus=gpus_per_cell, num_cpus=options.threads)(run_cell)
    device = "cuda:0" if gpus_per_cell else "cpu"    # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU
    quiet = replace(options, progress="none")
    pending = [remote.remote(cell, quiet, device) for cell in cells]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


def execute(cells: list[dict], options: RunOptions, backend: str, device: str, jobs: int | None,
            ray_address: str | None = None) -> list[dict]:
    """Run the cells, showing done / running / left (a bar on a terminal, a line per cell otherwise); returns
    each cell's status dict. Cells whose failure is recorded are skipped unless options.retry_failed."""
    if backend == "local":
        devices = local_devices(device, jobs)
        stream, width = _local(cells, options, devices), len(devices)
    elif backend == "ray":
        gpus = 1.0 if device in ("cuda", "auto") and (device == "cuda" or torch.cuda.is_available()) else 0.0
        stream, width = _ray(cells, options, ray_address, gpus), len(cells)
    else:
        raise UserError(f"unknown backend '{backend}'; choose local or ray")
    statuses: list[dict] = []
    bar = tqdm(total=len(cells), desc="cells", unit="cell", dynamic_ncols=True, disable=options.progress != "bars")
    try:
        for status in stream:
            statuses.append(status)
            left = len(cells) - len(statuses)
            bar.set_postfix(running=min(width, left), left=left, failed=sum(s["status"] == "failed" for s in statuses))
            bar.update(1)
            if options.progress == "lines":
                print(_line(status, len(statuses), len(cells)), file=sys.stderr, flush=True)
    finally:
        bar.close()
        stream.close()              # on an interrupt or error: stop (and join) the local workers now
    return statuses


def _line(status: dict, done: int, total: int) -> str:
    """'[3/80] <cell>: ran in 2 s' (or failed: reason, busy, done before) for a log."""
    text = f"[{done}/{total}] {status['name']}: {status['status']}"
    if status["status"] == "ran":
        text += f" in {status['seconds']:.0f} s"
    if status["status"] == "failed":
        text += f": {status['error']}"
    return text
