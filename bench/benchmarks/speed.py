"""Benchmark (not a test): one meta-training step of the paper's protocols on random data, four ways in one run
on one device: the whole step as a CUDA graph (vmap over tasks; with and without cuDNN autotuning), the eager
vmap step, and the per-task eager loop with a backward per task (how the popular PyTorch MAML libraries run);
plus meta-test time for 1000 episodes and peak memory.

    python -m bench.benchmarks.speed [--device cuda|cpu] [--protocols all|name,...] [--regularizer meta_dropout]
                          [--test-episodes 1000] [--budget-s 420] [--out FILE.json] [--tiny]

The JSON report is rewritten after every protocol, so a run cut short keeps what it measured. The per-task loop
is measured while the wall-clock budget lasts; meta-test runs whole test batches until --test-cap-s, then
extrapolates linearly."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from tabulate import tabulate

from bench.api import Experiment, build_experiment
from bench.core.executor import Executor
from bench.execution.cuda_graph import CUDNN_BENCHMARK, GraphedStep
from bench.data.episodes import EpisodeSampler, Episodes
from bench.core.evaluate import meta_test
from bench.store.protocol import load_protocol, protocol_names
from bench.benchmarks.report import report_main, write_report
from bench.benchmarks.timing import PeakMemory, call_ms, median_ms
from bench.util.devices import precision_settings
from bench.core.train import make_optimizer, outer_step

# protocol -> (ms per step at most, per-task loop / graph step at least); GPU targets
TARGETS = {"omniglot_20w1s": (25.0, 15.0), "omniglot_20w5s": (60.0, 5.0), "mini_5w1s": (30.0, 6.0),
           "mini_5w5s": (70.0, 3.0)}
TEST_TARGET_S = 60.0                  # meta-test of 1000 episodes
MEMORY_TARGET_GIB = 16.0
TINY = {"channels": 4, "queries": 2, "image_size": 16, "inner_steps": 2, "test_batch": 5}
TINY_TEST_SAMPLES = 2
GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to run the step: execution path, CUDA graph, cuDNN autotuning, (warm-up, timed) iterations."""

    execution: str
    graph: bool
    cudnn_benchmark: bool
    counts: tuple[int, int]


VARIANTS = {
    "graph": Variant("vectorized", True, True, (5, 50)),
    "graph_no_autotune": Variant("vectorized", True, False, (5, 50)),
    "eager": Variant("vectorized", False, True, (5, 30)),
    "per_task": Variant("per_task", False, True, (2, 10)),
}
BASELINE = "per_task"                 # the ratio is per-task eager loop / graph step
CPU_COUNTS = (1, 3)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--protocols", default="all", help="'all' or comma-separated protocol names")
    parser.add_argument("--regularizer", default="meta_dropout", help="e.g. meta_dropout, or none for plain MAML")
    parser.add_argument("--test-episodes", type=int, default=1000, help="meta-test episodes reported")
    parser.add_argument("--test-samples", type=int, help="Monte-Carlo samples S at meta-test (default 30; "
                        f"{TINY_TEST_SAMPLES} with --tiny)")
    parser.add_argument("--test-cap-s", type=float, default=25.0,
                        help="stop meta-test after the batch that passes this many seconds, then extrapolate "
                             "(on cpu or with --tiny one test batch is run)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="skip the remaining per-task-loop measurements past this many seconds")
    parser.add_argument("--tiny", action="store_true", help=f"shrink the protocols ({TINY}), S and iterations; "
                        "on cpu also use one thread")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/speed.json"))
    args = parser.parse_args(argv)
    if args.test_samples is None:
        args.test_samples = TINY_TEST_SAMPLES if args.tiny else 30
    return args


def prepare(name: str, args: argparse.Namespace) -> tuple[Experiment, Episodes, EpisodeSampler]:
    """The protocol's learner on synthetic data of its image shape, one fixed meta-batch, a test sampler."""
    p = load_protocol(name, overrides=TINY if args.tiny else None)
    shape = [p.in_channels, p.image_size, p.image_size]
    p = dataclasses.replace(p, dataset="synthetic", train_split="train", test_split="test",
                            data_options={"image_shape": shape, "n_per_class": max(20, p.shots + p.queries)})
    exp = build_experiment(p, regularizer=args.regularizer, seed=args.seed, device=args.device)
    episodes = EpisodeSampler(exp.train_bank, p.ways, p.shots, p.queries, seed=args.seed).sample(p.meta_batch)
    test_sampler = EpisodeSampler(exp.test_bank, p.ways, p.shots, p.queries, seed=args.seed + 1)
    return exp, episodes, test_sampler


def time_step(exp: Experiment, episodes: Episodes, initial: dict[str, torch.Tensor], variant: Variant,
              counts: tuple[int, int]) -> dict[str, Any]:
    """ms per meta-training step of one variant, from the same initial state and episodes; peak memory."""
    learner = exp.learner
    learner.load_state_dict(initial)
    for p in learner.parameters():
        p.grad = None
    torch.backends.cudnn.benchmark = variant.cudnn_benchmark
    optimizer = make_optimizer(learner, exp.protocol.meta_lr, capturable=variant.graph)
    step: Callable = partial(outer_step, learner, optimizer, executor=Executor(variant.execution))
    with PeakMemory(learner.device) as peak:
        began = time.perf_counter()
        if variant.graph:
            step = GraphedStep(learner, optimizer, step, episodes)
        setup_s = time.perf_counter() - began
        result = median_ms(lambda: step(episodes), learner.device, *counts)
    return {**result, "peak_bytes": peak.bytes, "setup_s": setup_s, **dataclasses.asdict(variant)}


def time_test(exp: Experiment, sampler: EpisodeSampler, args: argparse.Namespace, measured: int,
              cap_s: float) -> dict[str, Any]:
    """Seconds of meta_test per args.test_episodes: whole test batches after one warm-up batch, stopping at
    `measured` episodes or past cap_s seconds, then extrapolated linearly."""
    learner, batch = exp.learner, exp.protocol.test_batch
    torch.backends.cudnn.benchmark = CUDNN_BENCHMARK

    def run(n: int) -> dict[str, Any]:
        return meta_test(learner, sampler, n, batch, samples=args.test_samples, progress=False,
                         sample_chunk=exp.protocol.test_sample_chunk)

    done, seconds = 0, 0.0
    with PeakMemory(learner.device) as peak:
        run(batch)
        while done < measured and (done == 0 or seconds < cap_s):
            n = min(batch, measured - done)
            seconds += call_ms(lambda: run(n), learner.device) / 1000
            done += n
    return {"episodes_measured": done, "seconds_measured": seconds, "episodes": args.test_episodes,
            "seconds": seconds / done * args.test_episodes, "extrapolated": done < args.test_episodes,
            "batch": batch, "samples": args.test_samples, "sample_chunk": exp.protocol.test_sample_chunk,
            "peak_bytes": peak.bytes}


def guarded(measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """measure(), or {"error": ...} when it fails (out of memory, a capture error): the run goes on."""
    try:
        return measure()
    except Exception as err:  # noqa: BLE001 - a benchmark row records its failure and the run goes on
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}


def verdicts(name: str, row: dict[str, Any], on_gpu: bool) -> dict[str, str]:
    """pass/FAIL against the GPU targets; 'n/a' on CPU, for a protocol without targets or a missing baseline."""
    if not on_gpu or name not in TARGETS:
        return dict.fromkeys(("ms", "ratio", "meta_test", "memory"), "n/a")
    ms_max, ratio_min = TARGETS[name]
    ms, ratio, test_s = row["graph"].get("ms_median"), row["ratio"], row["meta_test"].get("seconds")
    peaks = [row[k].get("peak_bytes") for k in ("graph", "meta_test")]

    def check(ok: bool) -> str:
        return "pass" if ok else "FAIL"

    return {"ms": check(ms is not None and ms <= ms_max),
            "ratio": "n/a" if ratio is None else check(ratio >= ratio_min),
            "meta_test": check(test_s is not None and test_s <= TEST_TARGET_S),
            "memory": check(None not in peaks and max(peaks) <= MEMORY_TARGET_GIB * GIB)}


def measure_protocol(name: str, args: argparse.Namespace, left: Callable[[], float], notes: list[str]) -> dict:
    """Every variant of one protocol, then meta-test; the per-task loop only while the budget lasts."""
    on_gpu = args.device == "cuda"
    exp, episodes, test_sampler = prepare(name, args)
    initial = exp.learner.state_dict()
    row: dict[str, Any] = {"protocol": exp.protocol.to_dict()}
    for key, variant in VARIANTS.items():
        counts = variant.counts if on_gpu and not args.tiny else CPU_COUNTS
        if variant.graph and not on_gpu:
            row[key] = {"skipped": "CUDA graphs need a GPU"}
        elif key == BASELINE and left() < 0:
            row[key] = {"skipped": f"budget {args.budget_s:.0f} s spent"}
            notes.append(f"{name}: per-task loop skipped (wall-clock budget {args.budget_s:.0f} s spent)")
        else:
            row[key] = guarded(lambda: time_step(exp, episodes, initial, variant, counts))
    fastest = "graph" if on_gpu else "eager"
    timed = "ms_median" in row[BASELINE] and "ms_median" in row[fastest]
    row["ratio"] = row[BASELINE]["ms_median"] / row[fastest]["ms_median"] if timed else None
    measured = args.test_episodes if on_gpu and not args.tiny else exp.protocol.test_batch
    row["meta_test"] = guarded(lambda: time_test(exp, test_sampler, args, measured,
                                                 min(args.test_cap_s, max(left(), 1.0))))
    ms_target, ratio_target = TARGETS.get(name, (None, None))
    row["target"] = {"ms": ms_target, "ratio": ratio_target, "meta_test_s": TEST_TARGET_S,
                     "memory_gib": MEMORY_TARGET_GIB}
    row["verdict"] = verdicts(name, row, on_gpu)
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every selected protocol, rewriting the JSON report after each; returns the report."""
    began = time.perf_counter()
    device = torch.device(args.device)
    if args.tiny and device.type == "cpu":
        torch.set_num_threads(1)
    names = protocol_names() if args.protocols == "all" else [n.strip() for n in args.protocols.split(",")]
    report: dict[str, Any] = {
        "device": args.device, "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "precision": precision_settings(),
        "regularizer": args.regularizer, "tiny": args.tiny, "baseline": BASELINE,
        "variants": {k: dataclasses.asdict(v) for k, v in VARIANTS.items()},
        "memory_kind": PeakMemory(device).kind, "test_episodes": args.test_episodes, "budget_s": args.budget_s,
        "notes": [], "protocols": {}}
    for name in names:
        row = measure_protocol(name, args, lambda: args.budget_s - (time.perf_counter() - began), report["notes"])
        report["protocols"][name] = row
        report["elapsed_s"] = time.perf_counter() - began
        write_report(report, args.out)
        print(f"{name}: graph {_cell(row['graph'], 'ms_median', '.1f')} ms, eager {_cell(row['eager'], 'ms_median', '.1f')}"
              f" ms, per-task {_cell(row['per_task'], 'ms_median', '.1f')} ms, meta-test "
              f"{_cell(row['meta_test'], 'seconds', '.1f')} s", file=sys.stderr, flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return report


def _cell(measurement: dict[str, Any], key: str, fmt: str) -> str:
    """A measured value, or why it is missing (error, skipped)."""
    if key in measurement:
        return format(measurement[key] / GIB if key == "peak_bytes" else measurement[key], fmt)
    return measurement.get("error", measurement.get("skipped", "-"))[:24]


def render(report: dict[str, Any]) -> str:
    """Header lines and one table row per protocol."""
    table = []
    for name, r in report["protocols"].items():
        p, t, v, mt = r["protocol"], r["target"], r["verdict"], r["meta_test"]
        test = _cell(mt, "seconds", ".1f")
        if mt.get("extrapolated"):
            test += f" (extrap. from {mt['episodes_measured']})"
        table.append([f"{name} B={p['meta_batch']}", *(_cell(r[k], "ms_median", ".1f") for k in VARIANTS),
                      "-" if r["ratio"] is None else f"{r['ratio']:.1f}x",
                      f"<={t['ms']:g} ms, >={t['ratio']:g}x" if t["ms"] else "-", f"{v['ms']}/{v['ratio']}",
                      _cell(r["graph"], "peak_bytes", ".2f"), test, v["meta_test"], _cell(mt, "peak_bytes", ".2f"),
                      v["memory"]])
    headers = ["protocol", *(f"{k} ms" for k in VARIANTS), "per-task / fastest", "target", "ms/ratio",
               "graph GiB", f"meta-test s/{report['test_episodes']} ep", f"<={TEST_TARGET_S:g} s", "test GiB",
               f"<={MEMORY_TARGET_GIB:g} GiB"]
    head = [f"device {report['device']} ({report['device_name']}), torch {report['torch']}, "
            f"regularizer {report['regularizer']}{', tiny' if report['tiny'] else ''}, "
            f"{report['cpu_threads']} cpu threads",
            f"precision {json.dumps(report['precision'])}",
            f"ms = median; memory = {report['memory_kind']}; elapsed {report.get('elapsed_s', 0):.0f} s",
            *report["notes"]]
    if report["device"] != "cuda":
        head.append("targets are for a GPU: verdicts are n/a here")
    return "\n".join(head) + "\n" + tabulate(table, headers=headers, disable_numparse=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON."""
    return report_main(parse_args(argv), run, render)


if __name__ == "__main__":
    sys.exit(main())
