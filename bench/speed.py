"""Benchmark (not a test): the suite's vectorized meta-train step against the per-task eager reference loop,
and meta-test time, for each paper protocol on random data, in one run on one device.

    python -m bench.speed [--device cuda|cpu] [--protocols all|name,...] [--regularizer meta_dropout]
                          [--iters N] [--warmup N] [--test-episodes 1000] [--out FILE.json] [--tiny]

Suite and meta-test are measured first for every protocol, then the slow reference loop while the wall-clock
budget (--budget-s) lasts. Meta-test runs whole test batches until --test-cap-s, then extrapolates linearly."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from tabulate import tabulate

from bench.api import Experiment, build_experiment
from bench.episodes import EpisodeSampler, Episodes
from bench.errors import UserError
from bench.evaluate import meta_test
from bench.protocol import load_protocol, protocol_names
from bench.timing import PeakMemory, call_ms, median_ms, precision_settings
from bench.train import make_optimizer, outer_step

# protocol -> (suite ms/iteration at most, reference/suite ratio at least); GPU targets
TARGETS = {"omniglot_20w1s": (25.0, 15.0), "omniglot_20w5s": (60.0, 5.0), "mini_5w1s": (30.0, 6.0),
           "mini_5w5s": (70.0, 3.0)}
TEST_TARGET_S = 60.0                  # meta-test of 1000 episodes
MEMORY_TARGET_GIB = 16.0
TINY = {"channels": 4, "queries": 2, "image_size": 16, "inner_steps": 2, "test_batch": 5}
TINY_TEST_SAMPLES = 2
# (suite warm-up, suite timed, reference warm-up, reference timed)
COUNTS = {"cuda": (20, 50, 5, 15), "cpu": (1, 3, 1, 2), "tiny": (1, 3, 1, 2)}
GIB = 2 ** 30


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--protocols", default="all", help="'all' or comma-separated protocol names")
    parser.add_argument("--regularizer", default="meta_dropout", help="e.g. meta_dropout, or none for plain MAML")
    parser.add_argument("--warmup", type=int, help="suite warm-up iterations (default 20 on cuda)")
    parser.add_argument("--iters", type=int, help="suite timed iterations (default 50 on cuda)")
    parser.add_argument("--ref-warmup", type=int, help="reference warm-up iterations (default 5 on cuda)")
    parser.add_argument("--ref-iters", type=int, help="reference timed iterations (default 15 on cuda)")
    parser.add_argument("--test-episodes", type=int, default=1000, help="meta-test episodes reported")
    parser.add_argument("--test-samples", type=int, help="Monte-Carlo samples S at meta-test (default 30; "
                        f"{TINY_TEST_SAMPLES} with --tiny)")
    parser.add_argument("--test-cap-s", type=float, default=45.0,
                        help="stop meta-test after the batch that passes this many seconds, then extrapolate "
                             "(on cpu or with --tiny one test batch is run)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="skip the remaining reference measurements past this many seconds")
    parser.add_argument("--tiny", action="store_true", help=f"shrink the protocols ({TINY}), S and iterations; "
                        "on cpu also use one thread (small ops on a shared machine are far faster so)")
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


def time_train(exp: Experiment, episodes: Episodes, initial: dict[str, torch.Tensor], vectorized: bool,
               warmup: int, iters: int) -> dict[str, Any]:
    """ms/iteration of outer_step (suite, vmap) or of the same step on the eager per-task loop, from `initial`."""
    learner = exp.learner
    learner.load_state_dict(initial)
    optimizer = make_optimizer(learner, exp.protocol.meta_lr)
    with PeakMemory(learner.device) as peak:
        result = median_ms(lambda: outer_step(learner, optimizer, episodes, vectorized), learner.device,
                           warmup, iters)
    return {**result, "peak_bytes": peak.bytes}


def time_test(exp: Experiment, sampler: EpisodeSampler, args: argparse.Namespace, measured: int,
              cap_s: float) -> dict[str, Any]:
    """Seconds of meta_test per args.test_episodes: whole test batches after one warm-up batch, stopping at
    `measured` episodes or past cap_s seconds, then extrapolated linearly."""
    learner, batch = exp.learner, exp.protocol.test_batch

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
            "batch": batch, "samples": args.test_samples, "peak_bytes": peak.bytes}


def guarded(measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """measure(), or {"error": ...} when the device runs out of memory (the run goes on)."""
    try:
        return measure()
    except torch.OutOfMemoryError as err:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"error": "out of memory: " + str(err).splitlines()[0]}


def verdicts(name: str, row: dict[str, Any], on_gpu: bool) -> dict[str, str]:
    """pass/FAIL against the GPU targets; 'n/a' on CPU, for a protocol without targets or a skipped reference."""
    if not on_gpu or name not in TARGETS:
        return dict.fromkeys(("ms", "ratio", "meta_test", "memory"), "n/a")
    ms_max, ratio_min = TARGETS[name]
    ms, ratio, test_s = row["suite"].get("ms_median"), row["ratio"], row["meta_test"].get("seconds")
    peaks = [row[k].get("peak_bytes") for k in ("suite", "meta_test")]

    def check(ok: bool) -> str:
        return "pass" if ok else "FAIL"

    return {"ms": check(ms is not None and ms <= ms_max),
            "ratio": "n/a" if "skipped" in row["reference"] else check(ratio is not None and ratio >= ratio_min),
            "meta_test": check(test_s is not None and test_s <= TEST_TARGET_S),
            "memory": check(None not in peaks and max(peaks) <= MEMORY_TARGET_GIB * GIB)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every selected protocol (suite and meta-test first, then the reference loop); the JSON report."""
    began = time.perf_counter()

    def left() -> float:
        return args.budget_s - (time.perf_counter() - began)

    device = torch.device(args.device)
    if args.tiny and device.type == "cpu":
        torch.set_num_threads(1)
    names = protocol_names() if args.protocols == "all" else [n.strip() for n in args.protocols.split(",")]
    warmup, iters, ref_warmup, ref_iters = (given if given is not None else default for given, default in zip(
        (args.warmup, args.iters, args.ref_warmup, args.ref_iters), COUNTS["tiny" if args.tiny else args.device]))
    notes, rows, setups = [], {}, {}
    for name in names:
        exp, episodes, test_sampler = prepare(name, args)
        initial = exp.learner.state_dict()
        setups[name] = (exp, episodes, initial)
        measured = args.test_episodes if device.type == "cuda" and not args.tiny else exp.protocol.test_batch
        rows[name] = {"protocol": exp.protocol.to_dict(),
                      "suite": guarded(lambda: time_train(exp, episodes, initial, True, warmup, iters)),
                      "meta_test": guarded(lambda: time_test(exp, test_sampler, args, measured,
                                                             min(args.test_cap_s, max(left(), 0.0))))}
        print(f"{name}: suite {_cell(rows[name]['suite'], 'ms_median', '.1f')} ms, meta-test "
              f"{_cell(rows[name]['meta_test'], 'seconds', '.1f')} s", file=sys.stderr, flush=True)
    for name in names:
        exp, episodes, initial = setups.pop(name)
        row = rows[name]
        if left() < 0:
            row["reference"] = {"skipped": f"budget {args.budget_s:.0f} s spent"}
            notes.append(f"{name}: reference loop skipped (wall-clock budget {args.budget_s:.0f} s spent)")
        else:
            row["reference"] = guarded(lambda: time_train(exp, episodes, initial, False, ref_warmup, ref_iters))
        timed = "ms_median" in row["reference"] and "ms_median" in row["suite"]
        row["ratio"] = row["reference"]["ms_median"] / row["suite"]["ms_median"] if timed else None
        row["target"] = {"ms": TARGETS.get(name, (None, None))[0], "ratio": TARGETS.get(name, (None, None))[1],
                         "meta_test_s": TEST_TARGET_S, "memory_gib": MEMORY_TARGET_GIB}
        row["verdict"] = verdicts(name, row, device.type == "cuda")
        del exp
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"device": args.device,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "precision": precision_settings(),
            "regularizer": args.regularizer, "tiny": args.tiny,
            "counts": {"suite": [warmup, iters], "reference": [ref_warmup, ref_iters]},
            "memory_kind": PeakMemory(device).kind, "test_episodes": args.test_episodes, "budget_s": args.budget_s,
            "elapsed_s": time.perf_counter() - began, "notes": notes, "protocols": rows}


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
        table.append([f"{name} B={p['meta_batch']}", _cell(r["suite"], "ms_median", ".1f"),
                      _cell(r["reference"], "ms_median", ".1f"), "-" if r["ratio"] is None else f"{r['ratio']:.1f}x",
                      f"<={t['ms']:g} ms, >={t['ratio']:g}x" if t["ms"] else "-", f"{v['ms']}/{v['ratio']}",
                      _cell(r["suite"], "peak_bytes", ".2f"), _cell(r["reference"], "peak_bytes", ".2f"), test,
                      v["meta_test"], _cell(mt, "peak_bytes", ".2f"), v["memory"]])
    headers = ["protocol", "suite ms", "reference ms", "ratio", "target", "ms/ratio", "suite GiB", "ref GiB",
               f"meta-test s/{report['test_episodes']} ep", f"<={TEST_TARGET_S:g} s", "test GiB",
               f"<={MEMORY_TARGET_GIB:g} GiB"]
    head = [f"device {report['device']} ({report['device_name']}), torch {report['torch']}, "
            f"regularizer {report['regularizer']}{', tiny' if report['tiny'] else ''}, "
            f"{report['cpu_threads']} cpu threads",
            f"precision {json.dumps(report['precision'])}",
            f"iterations warm-up/timed: suite {report['counts']['suite']}, reference {report['counts']['reference']};"
            f" ms = median; memory = {report['memory_kind']}; elapsed {report['elapsed_s']:.0f} s",
            *report["notes"]]
    if report["device"] != "cuda":
        head.append("targets are for a GPU: verdicts are n/a here")
    return "\n".join(head) + "\n" + tabulate(table, headers=headers, disable_numparse=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON."""
    args = parse_args(argv)
    try:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda but no CUDA device is visible; use --device cpu")
        report = run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
