"""Benchmark (not a test): one meta-training step on the CPU (forward, second-order meta-gradient, clipping, Adam),
the suite against the generic MAML libraries run as their users run them (`higher`, learn2learn, a plain
torch.func per-task loop; each skipped with a note when not installed), with MAML and MAML + meta-dropout on
random Omniglot-shaped episodes. Same initial parameters, inputs and (for the gradient check) noise; meta-gradients
compared; repetitions interleaved; medians, ratios, load average. Peak memory of a step is measured for each
implementation in a fresh process. Then meta-test: the suite's (evaluate.adapt_and_score, as meta_test runs it on
the CPU) against a naive per-episode, per-sample loop on the same episodes and noise, episode by episode in
alternating order.

    python -m bench.benchmarks.peers [--configs all|name,...] [--reps 5] [--test-episodes 12] [--out results/peers.json]

Install `higher` with `pip install -e ".[peers]"`; learn2learn needs numpy < 2 (a separate environment:
docs/speed.md)."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
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

from bench.execution.allocator import retain_freed_memory
from bench.api import TEST_SEED_OFFSET, Experiment, build_experiment
from bench.core.noise import EpisodeNoise
from bench.execution.cpu import CpuExecutor, pool_size
from bench.data.episodes import EpisodeSampler, Episodes, FixedEpisodes
from bench.core.evaluate import adapt_and_score
from bench.benchmarks.peer_models import PEERS, PeerConv4, PeerStep, not_installed
from bench.store.protocol import load_protocol
from bench.benchmarks.report import write_report
from bench.benchmarks.timing import PeakMemory
from bench.core.train import make_optimizer, outer_step

# name -> (protocol overrides on omniglot_20w1s, intra-op threads), as in the measurements
CONFIGS = {"omniglot_5w1s_B4": ({"ways": 5, "meta_batch": 4}, 2), "omniglot_20w1s_B8": ({}, 1)}
REGULARIZERS = ("none", "meta_dropout")
SUITE = "suite"
SUITE_ONE_PROCESS = "suite, one process"     # where the suite runs on task processes: its intra-op-thread step too
TEST_CONFIG = ({"ways": 5, "meta_batch": 4, "mc_test": 30}, 1)       # meta-test: 5-way 1-shot, S = 30, 1 thread
SYNTHETIC_NOISE = 200.0          # pixel noise of the random episodes: hard enough that accuracies differ


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="all", help=f"'all' or some of {', '.join(CONFIGS)}")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per implementation (interleaved)")
    parser.add_argument("--test-episodes", type=int, default=12, help="meta-test episodes per implementation")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-process peak-memory runs")
    parser.add_argument("--out", type=Path, default=Path("results/peers.json"))
    parser.add_argument("--memory-probe", nargs=3, metavar=("CONFIG", "REGULARIZER", "IMPLEMENTATION"),
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def setup(config: str, regularizer: str, seed: int = 0,
          dtype: torch.dtype = torch.float32) -> tuple[Experiment, Episodes]:
    """The suite's experiment (CPU, its automatic execution path) on random episodes of the config's shape."""
    overrides, threads = CONFIGS.get(config, TEST_CONFIG)
    torch.set_num_threads(threads)
    p = load_protocol("omniglot_20w1s", overrides=overrides)
    p = dataclasses.replace(p, dataset="synthetic", data_options={"image_shape": [1, 28, 28], "n_per_class": 20,
                                                                  "noise": SYNTHETIC_NOISE})
    exp = build_experiment(p, regularizer=regularizer, seed=seed, dtype=dtype)
    episodes = EpisodeSampler(exp.train_bank, p.ways, p.shots, p.queries, seed=seed, dtype=dtype).sample(p.meta_batch)
    return exp, episodes


def available_peers() -> tuple[list[str], list[str]]:
    """(installed peers, notes on the missing ones)."""
    names, notes = [], []
    for name, (module, _) in PEERS.items():
        if module is None or importlib.util.find_spec(module) is not None:
            names.append(name)
        else:
            notes.append(f"{name}: {not_installed(module)}, skipped")
    return names, notes


def draw_noise(exp: Experiment, episodes: Episodes, generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """Every inner step's training noise for the meta-batch, drawn as the suite's step draws it."""
    learner = exp.learner
    batch, n = episodes.x_support.shape[:2]
    return [learner.reg.sample_noise(learner.spec, n, (batch, 1), generator, learner.device, learner.dtype)
            if learner.reg.draws_noise else {} for _ in range(learner.config.inner_steps)]


def steps(exp: Experiment, peers: list[str],
          one_process: Experiment | None = None) -> dict[str, Callable[[Episodes], Any]]:
    """Each implementation's full step from the same initial state; peers draw fresh noise every step; the
    suite's tasks on its executor (inside suite_pool: on the task processes, as meta_train runs them), and then
    also the suite's step in one process on the intra-op threads (one_process: an identical experiment)."""
    learner, meta_lr = exp.learner, exp.protocol.meta_lr
    suite_opt = make_optimizer(learner, meta_lr)
    out: dict[str, Callable[[Episodes], Any]] = {SUITE: lambda ep: outer_step(learner, suite_opt, ep, exp.executor)}
    if one_process is not None:
        one_opt = make_optimizer(one_process.learner, meta_lr)
        out[SUITE_ONE_PROCESS] = lambda ep: outer_step(one_process.learner, one_opt, ep)
    for name in peers:
        peer, generator = PeerStep(name, learner, meta_lr), torch.Generator().manual_seed(1)
        out[name] = lambda ep, peer=peer, generator=generator: peer(ep, draw_noise(exp, ep, generator))
    return out


@contextlib.contextmanager
def suite_pool(exp: Experiment) -> Iterator[list[int]]:
    """The suite's executor as meta_train runs it at the current thread count (task processes, if any); yields
    the task processes' ids."""
    executor = exp.executor
    with executor.training(exp.learner, exp.protocol.meta_batch):
        pool = executor.pool if isinstance(executor, CpuExecutor) else None
        yield pool.pids if pool is not None else []


def gradient_check(exp: Experiment, episodes: Episodes, peers: list[str]) -> dict[str, float]:
    """Largest relative difference (per tensor, to its largest entry) between each peer's meta-gradients and the
    suite's, on the same noise (in float64: five second-order steps on these hard episodes amplify float32
    rounding, so float32 gradients of different but equal formulas differ by up to a few 10%). A tensor whose
    gradient is zero up to rounding (conv biases, which batch norm cancels) is measured against 1e-6 of the
    largest entry of the whole meta-gradient instead of its own rounding noise."""
    learner = exp.learner
    state = learner.noise_generator.get_state()
    with suite_pool(exp):
        _, _, grads = exp.executor.meta_gradients(learner, episodes)
    suite = dict(zip(learner.named_parameters(), grads))
    learner.noise_generator.set_state(state)
    noise = draw_noise(exp, episodes, learner.noise_generator)
    learner.noise_generator.set_state(state)
    floor = 1e-6 * max(float(g.abs().max()) for g in suite.values())
    out = {}
    for name in peers:
        peer = PeerStep(name, learner, exp.protocol.meta_lr)
        peer.gradients(episodes, noise)
        out[name] = max(float((g - suite[n]).abs().max() / suite[n].abs().max().clamp_min(floor))
                        for n, g in peer.named_gradients().items())
    return out


def time_interleaved(fns: dict[str, Callable[[Episodes], Any]], episodes: Episodes, reps: int) -> dict[str, dict]:
    """Median seconds per call of each function, one warm-up call each, then `reps` rounds in rotating order."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn(episodes)
    order = list(fns)
    for rep in range(reps):
        for name in order[rep % len(order):] + order[:rep % len(order)]:
            began = time.perf_counter()
            fns[name](episodes)
            times[name].append(time.perf_counter() - began)
    return {name: {"ms_median": 1000 * statistics.median(t), "ms_min": 1000 * min(t), "reps": len(t)}
            for name, t in times.items()}


def memory_probe(config: str, regularizer: str, implementation: str) -> int:
    """Peak-RSS growth of two steps of one implementation above its set-up baseline (run in a fresh process)."""
    exp, episodes = setup(config, regularizer)
    suite = implementation in (SUITE, SUITE_ONE_PROCESS)
    with suite_pool(exp) if implementation == SUITE else contextlib.nullcontext([]) as pids:
        fn = steps(exp, [] if suite else [implementation])[SUITE if suite else implementation]
        with PeakMemory(torch.device("cpu"), tuple(pids)) as peak:
            fn(episodes)
            fn(episodes)
    return peak.bytes


def measure_memory(config: str, regularizer: str, implementations: list[str]) -> dict[str, int | str]:
    """memory_probe of every implementation, each in its own process."""
    out: dict[str, int | str] = {}
    for name in implementations:
        probe = ["--memory-probe", config, regularizer, name]
        proc = subprocess.run([sys.executable, "-m", "bench.benchmarks.peers", *probe],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
        out[name] = int(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else proc.stderr[-300:]
    return out


def naive_test_episode(exp: Experiment, episodes: Episodes, noise: EpisodeNoise) -> float:
    """One test episode the naive way: a stock-op module, each Monte-Carlo sample's inner gradient by its own
    forward and backward, averaged; accuracy in percent."""
    learner = exp.learner
    model = PeerConv4(learner.spec, learner.adapted, meta_dropout=learner.reg.name == "meta_dropout")
    meta = {n: v.detach() for n, v in learner.meta_only.items()}
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    samples = learner.samples(learner.config.mc_test)
    x, y = episodes.x_support[0], episodes.y_support[0]
    for k in range(learner.config.inner_steps):
        step_noise = noise(k, 0, samples)
        total = [torch.zeros_like(p) for p in params.values()]
        for s in range(samples):
            sample = {n: v[0, s] for n, v in step_noise.items()} or None
            loss = F.cross_entropy(torch.func.functional_call(model, params, (x, meta, sample)), y)
            for t, g in zip(total, torch.autograd.grad(loss, list(params.values()))):
                t.add_(g, alpha=1 / samples)
        params = {n: (p - learner.config.inner_lr * g).detach().requires_grad_(True)
                  for (n, p), g in zip(params.items(), total)}
    with torch.no_grad():
        logits = torch.func.functional_call(model, params, (episodes.x_query[0], meta))
    return float(100 * (logits.argmax(-1) == episodes.y_query[0]).double().mean())


def _meta_tests(episodes_count: int, dtype: torch.dtype) -> tuple[Experiment, list[float], float, list[float], float]:
    """(experiment, suite accuracies, seconds, naive accuracies, seconds) on the same fixed episodes and
    per-episode noise, episode by episode, the two interleaved (the suite's meta-test at batch 1, as on the CPU)."""
    exp, _ = setup("meta_test", "meta_dropout", dtype=dtype)
    p, seed, learner = exp.protocol, exp.seed + TEST_SEED_OFFSET, exp.learner
    fixed = FixedEpisodes(exp.test_bank, p.ways, p.shots, p.test_queries or p.queries, seed=seed,
                          count=episodes_count, dtype=dtype)

    def suite_episode(ep: Episodes, e: int) -> float:
        with torch.no_grad():
            _, logits = adapt_and_score(learner, ep, e, learner.config.mc_test, p.test_sample_chunk, seed,
                                        exp.executor)
        return float(100 * (logits.argmax(-1) == ep.y_query).double().mean())

    def naive_episode(ep: Episodes, e: int) -> float:
        return naive_test_episode(exp, ep, learner.episode_noise([e], ep.x_support.shape[1], seed))

    accuracies: dict[str, list[float]] = {"suite": [], "naive": []}
    seconds = {"suite": 0.0, "naive": 0.0}
    runners = {"suite": suite_episode, "naive": naive_episode}
    episodes = [fixed.sample(1) for _ in range(episodes_count)]
    for run in runners.values():                        # one untimed warm-up episode each
        run(episodes[0], 0)
    for e, ep in enumerate(episodes):
        for name in (("suite", "naive") if e % 2 == 0 else ("naive", "suite")):
            began = time.perf_counter()
            accuracies[name].append(runners[name](ep, e))
            seconds[name] += time.perf_counter() - began
    return exp, accuracies["suite"], seconds["suite"], accuracies["naive"], seconds["naive"]


def measure_meta_test(episodes_count: int, exact_episodes: int = 3) -> dict[str, Any]:
    """Episodes per second of the suite's meta-test (as Experiment.test runs it) and of the naive loop on the same
    fixed episodes and per-episode noise (float32), interleaved, and whether both give the same accuracies in
    float64 (in float32 the two orders of summation may flip an argmax on these hard episodes; the count is
    reported)."""
    exp, suite, suite_s, naive, naive_s = _meta_tests(episodes_count, torch.float32)
    _, exact_suite, _, exact_naive, _ = _meta_tests(exact_episodes, torch.float64)
    return {"protocol": "omniglot 5-way 1-shot, S = 30, meta-dropout, 1 thread", "episodes": episodes_count,
            "test_batch": exp.executor.test_batch(exp.protocol.test_batch),
            "sample_chunk": exp.protocol.test_sample_chunk,
            "suite_episodes_per_s": episodes_count / suite_s, "naive_episodes_per_s": episodes_count / naive_s,
            "speedup": naive_s / suite_s, "float32_episodes_differing": sum(a != b for a, b in zip(suite, naive)),
            "same_accuracies_float64": exact_suite == exact_naive, "float64_episodes": exact_episodes,
            "suite_accuracies": suite, "naive_accuracies": naive}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every config x regularizer: gradient check, interleaved timing, memory; then meta-test."""
    peers, notes = available_peers()
    names = list(CONFIGS) if args.configs == "all" else [c.strip() for c in args.configs.split(",")]
    report: dict[str, Any] = {"torch": torch.__version__, "cpu_count": os.cpu_count(), "peers": peers,
                              "allocator": retain_freed_memory() + " (process-wide: the peers' steps too)",
                              "notes": notes, "reps": args.reps, "rows": []}
    for config in names:
        for regularizer in REGULARIZERS:
            load_before = os.getloadavg()[0]
            exp, episodes = setup(config, regularizer)
            row = {"config": config, "regularizer": regularizer, "threads": torch.get_num_threads(),
                   "execution": exp.learner.config.execution,
                   "task_processes": pool_size(exp.learner, exp.protocol.meta_batch),
                   "gradient_rel_diff": gradient_check(*setup(config, regularizer, dtype=torch.float64), peers)}
            one_process = setup(config, regularizer)[0] if row["task_processes"] > 1 else None
            with suite_pool(exp):
                row["times"] = time_interleaved(steps(exp, peers, one_process), episodes, args.reps)
            row["load_average"] = [load_before, os.getloadavg()[0]]
            fastest = min(peers, key=lambda n: row["times"][n]["ms_median"]) if peers else None
            row["fastest_peer"] = fastest
            row["speedup_vs_fastest_peer"] = (row["times"][fastest]["ms_median"] / row["times"][SUITE]["ms_median"]
                                              if fastest else None)
            if not args.no_memory:
                row["peak_bytes"] = measure_memory(config, regularizer, list(row["times"]))
            report["rows"].append(row)
            write_report(report, args.out)
            print(f"{config} {regularizer}: " + ", ".join(f"{n} {t['ms_median']:.0f} ms"
                                                          for n, t in row["times"].items()), file=sys.stderr)
    if args.test_episodes:
        report["meta_test"] = measure_meta_test(args.test_episodes)
    report["load_average_end"] = os.getloadavg()
    write_report(report, args.out)
    return report


def render(report: dict[str, Any]) -> str:
    """The step table (ms, ratio to the fastest peer, memory, gradient agreement) and the meta-test line."""
    impls = [SUITE, *([SUITE_ONE_PROCESS] * any(SUITE_ONE_PROCESS in r["times"] for r in report["rows"])),
             *report["peers"]]
    table = []
    for r in report["rows"]:
        mem = r.get("peak_bytes", {})
        processes = r.get("task_processes", 1)
        table.append([f"{r['config']} ({r['threads']} thr" + (f", suite {processes} proc)" if processes > 1 else ")"),
                      r["regularizer"],
                      *(f"{r['times'][n]['ms_median']:.0f}" if n in r["times"] else "-" for n in impls),
                      "-" if r["speedup_vs_fastest_peer"] is None else f"{r['speedup_vs_fastest_peer']:.2f}x",
                      " / ".join(f"{mem[n] / 2**30:.2f}" if isinstance(mem.get(n), int) else "-" for n in impls),
                      max(r["gradient_rel_diff"].values(), default=0.0), f"{r['load_average'][1]:.1f}"])
    headers = ["config", "regularizer", *(f"{n} ms" for n in impls), "suite speed-up vs fastest peer",
               "peak GiB (" + " / ".join(impls) + ")", "max rel. grad diff", "load avg"]
    lines = [f"torch {report['torch']}, {report['cpu_count']} CPUs; medians of {report['reps']} interleaved steps; "
             f"allocator: {report.get('allocator', 'default')}", *report["notes"],
             tabulate(table, headers=headers, disable_numparse=True)]
    if "meta_test" in report:
        m = report["meta_test"]
        lines.append(f"meta-test ({m['protocol']}, {m['episodes']} episodes, test batch {m['test_batch']}): suite "
                     f"{m['suite_episodes_per_s']:.2f} episodes/s, naive loop {m['naive_episodes_per_s']:.2f}: "
                     f"{m['speedup']:.2f}x; float32 episodes whose accuracy differs: "
                     f"{m['float32_episodes_differing']}; same accuracies in float64 ({m['float64_episodes']} "
                     f"episodes): {m['same_accuracies_float64']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or one memory probe), print the table, write the JSON."""
    args = parse_args(argv)
    if args.memory_probe:
        print(memory_probe(*args.memory_probe))
        return 0
    report = run(args)
    print(render(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
