"""Benchmark (not a test): what each CPU speed path gains on a whole unit of work. Every path of bench/ops/kernels.py
and bench/execution/ is switched off alone (its stock replacement substituted), everything else on, and a whole
meta-training step or meta-test episode is timed with and without it, the two interleaved (alternating order, one
warm-up each), on the same random Omniglot-shaped episodes; the gain is the median over repetitions of the paired
ratio of times, with the load average. Memory paths are measured as peak resident memory in fresh processes. A
path whose best gain is under 5% does not pay for itself (docs/speed.md).

    python -m bench.benchmarks.paths [--paths all|name,...] [--reps 7] [--quick] [--out results/paths.json]"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from tabulate import tabulate

from bench import api
from bench.api import TEST_SEED_OFFSET, Experiment, build_experiment
from bench.core.evaluate import adapt_and_score
from bench.core.executor import Executor
from bench.core.train import make_optimizer, outer_step
from bench.data.episodes import EpisodeSampler, Episodes
from bench.execution.cpu import CpuExecutor
from bench.ops import dispatch, kernels
from bench.store.protocol import load_protocol
from bench.benchmarks.report import report_main, write_report
from bench.benchmarks.timing import PeakMemory
from bench.util.devices import intra_op_threads

PAYS = 0.05                      # a path must make some whole unit at least 5% faster (or lighter) to stay
SYNTHETIC_NOISE = 200.0          # pixel noise of the random episodes (as bench.benchmarks.peers)
# workload -> (protocol overrides on omniglot_20w1s, regularizer, intra-op threads, what one unit is)
WORKLOADS = {
    "train_5w_md": ({"ways": 5, "meta_batch": 4}, "meta_dropout", 1, "meta-train step"),
    "train_5w_md_2threads": ({"ways": 5, "meta_batch": 4}, "meta_dropout", 2, "meta-train step"),
    "train_20w_maml": ({}, "none", 1, "meta-train step"),
    "test_5w_md": ({"ways": 5, "meta_batch": 4, "mc_test": 30}, "meta_dropout", 1, "meta-test episode"),
    "test_5w_vib": ({"ways": 5, "meta_batch": 4, "mc_test": 30}, "vib", 1, "meta-test episode"),
}
QUICK = {"channels": 8, "inner_steps": 1, "queries": 2, "test_queries": 2, "mc_test": 4}


@contextlib.contextmanager
def _patched(target: Any, **values: Any) -> Iterator[None]:
    """Attributes of `target` replaced inside the block (this process only)."""
    saved = {name: getattr(target, name) for name in values}
    for name, value in values.items():
        setattr(target, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(target, name, value)


def _relu_then_pool(ops: dispatch.Ops, f: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor | None,
                    eps: float) -> torch.Tensor:
    """Ops.norm_relu_pool with the ReLU before the pool (the fused first-order block kept)."""
    if ops.cpu_kernels and ops.plan.first_order and kernels.fused_block_applies(f, beta, gamma):
        return kernels.bn_pool_relu(f, beta, eps, ops.plan.sample_groups)
    return kernels.max_pool2(F.relu(ops.batch_norm(f, beta, gamma, eps)))


_SOFTPLUS = kernels.softplus
KERNEL_PATHS: dict[str, tuple[str, Callable[[], contextlib.AbstractContextManager]]] = {
    "max_pool": ("channels-last 2x2 max pool", lambda: _patched(kernels, max_pool2=lambda x: F.max_pool2d(x, 2))),
    "pool_first": ("pool before the ReLU", lambda: _patched(dispatch.Ops, norm_relu_pool=_relu_then_pool)),
    "batch_norm": ("batch norm: row statistics, short double backward", lambda: _patched(
        kernels, batch_norm=lambda x, scale, beta, eps: F.batch_norm(x, None, None, scale, beta, True, 0.0, eps))),
    "conv": ("convolution's double backward", lambda: _patched(
        kernels, conv2d=lambda x, weight, bias, padding=1: F.conv2d(x, weight, bias, padding=padding))),
    "fused_block": ("batch norm + pool + ReLU fused (first order)", lambda: _patched(
        kernels, fused_block_applies=lambda *args: False)),
    "fused_product": ("f * softplus(a) saving f and a (first order)", lambda: _patched(
        kernels, mul_softplus=lambda f, a: f * _SOFTPLUS(a))),
}


class _VectorizedTestAdaptation(CpuExecutor):
    """The CPU executor adapting test episodes by vmap over tasks and samples (the core's way)."""

    def test_route(self, learner: Any, samples: int) -> str:
        return "vectorized"


def setup(workload: str, quick: bool, seed: int = 0) -> tuple[Experiment, Episodes]:
    """The workload's experiment on random episodes of its shape, at its thread count."""
    overrides, regularizer, threads, _ = WORKLOADS[workload]
    torch.set_num_threads(threads)
    p = load_protocol("omniglot_20w1s", overrides={**overrides, **(QUICK if quick else {})})
    p = dataclasses.replace(p, dataset="synthetic", data_options={"image_shape": [1, 28, 28], "n_per_class": 20,
                                                                  "noise": SYNTHETIC_NOISE})
    exp = build_experiment(p, regularizer=regularizer, seed=seed)
    episodes = EpisodeSampler(exp.train_bank, p.ways, p.shots, p.queries, seed=seed).sample(p.meta_batch)
    return exp, episodes


def _train_unit(exp: Experiment, executor: Executor) -> Callable[[Episodes], Any]:
    optimizer = make_optimizer(exp.learner, exp.protocol.meta_lr)
    return lambda episodes: outer_step(exp.learner, optimizer, episodes, executor)[0].item()


def _test_unit(exp: Experiment, executor: Executor, batch: int = 1) -> Callable[[Episodes], Any]:
    p = exp.protocol
    sampler = EpisodeSampler(exp.test_bank, p.ways, p.shots, p.test_queries or p.queries, seed=1)

    def episode(_: Episodes) -> None:
        with torch.no_grad():
            adapt_and_score(exp.learner, sampler.sample(batch), 0, p.mc_test, p.test_sample_chunk,
                            exp.seed + TEST_SEED_OFFSET, executor)
    return episode


def paired(on: Callable[[Episodes], Any], off: Callable[[Episodes], Any], episodes: Episodes, reps: int,
           off_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
           per_unit: int = 1) -> dict[str, Any]:
    """Interleaved timing of on and off (off inside off_context), alternating which runs first; the median of the
    paired ratios off / on and the medians of each, in ms per unit (per_unit units per call)."""
    on(episodes)
    with off_context():
        off(episodes)
    times: dict[str, list[float]] = {"on": [], "off": []}
    for rep in range(reps):
        for name in (("on", "off") if rep % 2 == 0 else ("off", "on")):
            with off_context() if name == "off" else contextlib.nullcontext():
                began = time.perf_counter()
                (on if name == "on" else off)(episodes)
                times[name].append((time.perf_counter() - began) / per_unit)
    ratios = [b / a for a, b in zip(times["on"], times["off"])]
    return {"ms_on": 1000 * statistics.median(times["on"]), "ms_off": 1000 * statistics.median(times["off"]),
            "gain": statistics.median(ratios) - 1, "reps": reps, "load_average": os.getloadavg()[0]}


def measure_kernel(name: str, workload: str, reps: int, quick: bool) -> dict[str, Any]:
    """One kernel path off against all on, on one workload (the core's per-task path in one process)."""
    exp, episodes = setup(workload, quick)
    unit = (_test_unit(exp, CpuExecutor()) if workload.startswith("test")
            else _train_unit(exp, Executor("per_task")))
    return paired(unit, unit, episodes, reps, KERNEL_PATHS[name][1])


def measure_execution(name: str, reps: int, quick: bool) -> dict[str, Any]:
    """An execution path against the way the core alone would run the same unit."""
    if name == "per_task":
        exp, episodes = setup("train_5w_md", quick)
        return {"workload": "train_5w_md", **paired(_train_unit(exp, Executor("per_task")),
                                                    _train_unit(exp, Executor("vectorized")), episodes, reps)}
    if name == "task_processes":
        exp, episodes = setup("train_5w_md_2threads", quick)
        executor = CpuExecutor()
        with executor.training(exp.learner, exp.protocol.meta_batch):
            return {"workload": "train_5w_md_2threads",
                    **paired(_train_unit(exp, executor), _train_unit(exp, Executor("per_task")), episodes, reps)}
    exp, episodes = setup("test_5w_md", quick)
    if name == "samples_as_batch":
        off = _test_unit(exp, _VectorizedTestAdaptation())
    else:                    # test_batch_1: four episodes one at a time against one batch of four, per episode
        single = _test_unit(exp, CpuExecutor())
        return {"workload": "test_5w_md", **paired(lambda ep: [single(ep) for _ in range(4)],
                                                   _test_unit(exp, CpuExecutor(), batch=4), episodes, reps,
                                                   per_unit=4)}
    return {"workload": "test_5w_md", **paired(_test_unit(exp, CpuExecutor()), off, episodes, reps)}


EXECUTION_PATHS = {
    "per_task": "a backward per task (training) instead of vmap over tasks",
    "task_processes": "the meta-batch's tasks on 2 processes instead of 2 intra-op threads",
    "samples_as_batch": "meta-test: the S samples as one batch instead of vmap",
    "test_batch_1": "meta-test: episodes one at a time instead of 4 at once",
}
PROCESS_PATHS = {
    "allocator": "glibc keeps freed blocks up to 1 GiB (mallopt), this process",
    "fused_product_memory": "f * softplus(a) saving f and a: peak memory",
    "fused_block_memory": "batch norm + pool + ReLU fused (first order): peak memory",
    "test_batch_1_memory": "meta-test: episodes one at a time instead of 4 at once (vmap route): peak memory",
    "pool_first_memory": "pool before the ReLU: peak memory",
}


def probe(name: str, state: str, quick: bool) -> float:
    """In a fresh process: ms per 20-way MAML step (allocator), or the peak bytes of two 5-way meta-dropout steps in
    one process (a kernel path's _memory) or of four test episodes (test_batch_1_memory), with the path on or off."""
    if name == "allocator":
        if state == "off":
            api.retain_freed_memory = lambda: "default (switched off by the benchmark)"
        exp, episodes = setup("train_20w_maml", quick)
        unit = _train_unit(exp, Executor("per_task"))
        unit(episodes)
        began = time.perf_counter()
        for _ in range(2):
            unit(episodes)
        return 1000 * (time.perf_counter() - began) / 2
    if name == "test_batch_1_memory":                        # four episodes one at a time, or one batch of four
        exp, episodes = setup("test_5w_vib", quick)
        single, batched = _test_unit(exp, CpuExecutor()), _test_unit(exp, CpuExecutor(), batch=4)
        with PeakMemory(torch.device("cpu")) as peak:
            _ = [single(episodes) for _ in range(4)] if state == "on" else batched(episodes)
        return float(peak.bytes)
    if name.endswith("_memory"):                             # a kernel path's peak memory in one process
        exp, episodes = setup("train_5w_md", quick)
        unit = _train_unit(exp, Executor("per_task"))
        with KERNEL_PATHS[name.removesuffix("_memory")][1]() if state == "off" else contextlib.nullcontext():
            with PeakMemory(torch.device("cpu")) as peak:
                unit(episodes)
                unit(episodes)
        return float(peak.bytes)
    raise SystemExit(f"no probe {name!r}")


def measure_process(name: str, reps: int, quick: bool) -> dict[str, Any]:
    """Fresh processes with the path on and off, alternating; the median of the paired ratios off / on."""
    values: dict[str, list[float]] = {"on": [], "off": []}
    for rep in range(reps):
        for state in (("on", "off") if rep % 2 == 0 else ("off", "on")):
            command = [sys.executable, "-m", "bench.benchmarks.paths", "--probe", name, state] + (
                ["--quick"] if quick else [])
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            values[state].append(float(out.stdout.strip().splitlines()[-1]))
    ratios = [b / a for a, b in zip(values["on"], values["off"])]
    unit = "ms" if name == "allocator" else "bytes"
    workload = {"allocator": "train_20w_maml", "test_batch_1_memory": "test_5w_vib"}.get(name, "train_5w_md")
    return {"workload": workload, "unit": unit,
            f"{unit}_on": statistics.median(values["on"]), f"{unit}_off": statistics.median(values["off"]),
            "gain": statistics.median(ratios) - 1, "reps": reps, "load_average": os.getloadavg()[0]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every selected path on its workloads; writes args.out."""
    every = [*KERNEL_PATHS, *EXECUTION_PATHS, *PROCESS_PATHS]
    names = every if args.paths == "all" else [n.strip() for n in args.paths.split(",")]
    report: dict[str, Any] = {"torch": torch.__version__, "cpu_count": os.cpu_count(), "quick": args.quick,
                              "threshold": PAYS, "paths": []}
    for name in names:
        if name in KERNEL_PATHS:
            reps = {"train_5w_md": args.reps, "train_20w_maml": max(3, args.reps // 3), "test_5w_md": args.reps}
            rows = [{"workload": w, **measure_kernel(name, w, reps[w], args.quick)} for w in reps
                    if args.workloads == "all" or w in args.workloads.split(",")]
            what = KERNEL_PATHS[name][0]
        elif name in EXECUTION_PATHS:
            rows, what = [measure_execution(name, args.reps, args.quick)], EXECUTION_PATHS[name]
        elif name in PROCESS_PATHS:
            rows, what = [measure_process(name, max(2, args.reps // 3), args.quick)], PROCESS_PATHS[name]
        else:
            raise SystemExit(f"unknown path {name!r}; choose from {', '.join(every)}")
        best = max(r["gain"] for r in rows)
        report["paths"].append({"path": name, "what": what, "rows": rows, "best_gain": best, "pays": best >= PAYS})
        write_report(report, args.out)                       # each path as soon as it is measured
    return report


def render(report: dict[str, Any]) -> str:
    """The table: per path and workload the time (or memory) with the path on and off and the gain."""
    lines = []
    for path in report["paths"]:
        for row in path["rows"]:
            unit = row.get("unit", "ms")
            on, off = row.get(f"{unit}_on"), row.get(f"{unit}_off")
            scale = 2 ** 20 if unit == "bytes" else 1
            lines.append([path["path"], row["workload"], f"{on / scale:.1f}", f"{off / scale:.1f}",
                          "MiB" if unit == "bytes" else "ms", f"{100 * row['gain']:+.1f}%",
                          f"{row['load_average']:.1f}", "yes" if path["pays"] else "NO"])
    return tabulate(lines, headers=["path", "workload", "on", "off", "unit", "gain", "load", "pays"])


def main(argv: list[str] | None = None) -> int:
    """Command line: the benchmark, or (--probe) one fresh-process measurement."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", default="all", help="'all' or comma-separated path names")
    parser.add_argument("--reps", type=int, default=7, help="paired repetitions per workload (a third of them, at "
                        "least 3, on the 20-way step; fresh-process pairs: a third, at least 2)")
    parser.add_argument("--workloads", default="all", help="kernel paths: 'all' or some of train_5w_md, "
                        "train_20w_maml, test_5w_md")
    parser.add_argument("--quick", action="store_true", help=f"shrink the workloads ({QUICK}): checks the script")
    parser.add_argument("--out", type=Path, default=Path("results/paths.json"))
    parser.add_argument("--probe", nargs=2, metavar=("PATH", "STATE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        with intra_op_threads(1):
            print(probe(*args.probe, args.quick))
        return 0
    return report_main(args, run, render)


if __name__ == "__main__":
    sys.exit(main())
