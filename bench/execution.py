"""Running cells: local processes over the machine's devices (joblib), or a Ray cluster; the same cell
function and results folder either way, with a progress display of cells done / running / left."""
from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from bench.errors import UserError
from bench.run_cell import run_cell


def local_devices(device: str, jobs: int) -> list[str]:
    """One device per worker: each GPU once ('cuda'), or `jobs` CPU workers ('cpu'), or an explicit list."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda asked but no GPU is visible; use --device cpu")
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if device == "auto":
        return local_devices("cuda", jobs) if torch.cuda.is_available() else ["cpu"] * jobs
    if device == "cpu":
        return ["cpu"] * jobs
    return [d.strip() for d in device.split(",")]


def _local(cells: list[dict], results: str, data_root: str | None, devices: list[str],
           retry_failed: bool) -> Iterator[dict]:
    from joblib import Parallel, delayed
    if len(devices) == 1:                       # one worker: show each cell's own training progress too
        for cell in cells:
            yield run_cell(cell, results, data_root, devices[0], progress=True, retry_failed=retry_failed)
        return
    threads = max(1, (os.cpu_count() or 1) // len(devices))
    jobs = [delayed(run_cell)(cell, results, data_root, devices[i % len(devices)], False, threads, retry_failed)
            for i, cell in enumerate(cells)]
    yield from Parallel(n_jobs=len(devices), return_as="generator_unordered")(jobs)


def _ray(cells: list[dict], results: str, data_root: str | None, address: str | None,
         gpus_per_cell: float, retry_failed: bool) -> Iterator[dict]:
    try:
        import ray
    except ImportError:
        raise UserError("the Ray backend needs ray: pip install -e '.[ray]'") from None
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(num_gpus=gpus_per_cell, num_cpus=1)(run_cell)
    device = "cuda:0" if gpus_per_cell else "cpu"    # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU
    pending = [remote.remote(cell, results, data_root, device, retry_failed=retry_failed) for cell in cells]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


def execute(cells: list[dict], results: str, data_root: str | None, backend: str, device: str, jobs: int,
            ray_address: str | None = None, retry_failed: bool = False) -> list[dict]:
    """Run the cells, showing done / running / left; returns each cell's status dict. Cells whose failure is
    recorded are skipped unless retry_failed."""
    if backend == "local":
        devices = local_devices(device, jobs)
        stream, width = _local(cells, results, data_root, devices, retry_failed), len(devices)
    elif backend == "ray":
        gpus = 1.0 if device in ("cuda", "auto") and (device == "cuda" or torch.cuda.is_available()) else 0.0
        stream, width = _ray(cells, results, data_root, ray_address, gpus, retry_failed), len(cells)
    else:
        raise UserError(f"unknown backend '{backend}'; choose local or ray")
    statuses = []
    try:
        with tqdm(total=len(cells), desc="cells", unit="cell", dynamic_ncols=True) as bar:
            for status in stream:
                statuses.append(status)
                left = len(cells) - len(statuses)
                bar.set_postfix(running=min(width, left), left=left,
                                failed=sum(s["status"] == "failed" for s in statuses))
                bar.update(1)
    finally:
        stream.close()              # on an interrupt or error: stop (and join) the local workers now
    return statuses
