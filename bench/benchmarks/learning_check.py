"""Learning check (not a test): MAML against MAML + meta-dropout on one protocol (default: the paper's Omniglot
20-way 1-shot) at the largest iteration count that fits a wall-clock budget, both meta-tested on the same
episodes, with the paired difference. Training alternates between the two cells in chunks (each resumes from its
checkpoint) until the next chunk would not fit; the JSON is rewritten after every phase.

    python -m bench.benchmarks.learning_check [--device cuda] [--budget-s 330] [--test-reserve-s 90] [--episodes 600]
                                   [--data-root DIR] [--set key=value ...] [--out FILE.json]"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.api import Experiment, build_experiment
from bench.store.protocol import load_protocol, parse_overrides
from bench.benchmarks.report import report_main, write_report
from bench.util.devices import precision_settings
from tables.stats import t_interval, won_tied_lost, wilcoxon_p

ROWS = {"maml": "none", "maml+meta_dropout": "meta_dropout"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--protocol", default="omniglot_20w1s")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="protocol overrides (as for run_all.py)")
    parser.add_argument("--budget-s", type=float, default=330.0, help="wall-clock budget of the whole check")
    parser.add_argument("--test-reserve-s", type=float, default=90.0, help="part of the budget kept for meta-test")
    parser.add_argument("--chunk", type=int, default=250, help="iterations each cell trains per turn")
    parser.add_argument("--episodes", type=int, default=600, help="meta-test episodes (the same for both)")
    parser.add_argument("--data-root")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/learning_check.json"))
    return parser.parse_args(argv)


def paired_summary(a: list[float], b: list[float]) -> dict[str, float]:
    """b - a over the same episodes: mean with its 95% t-interval, Wilcoxon signed-rank p, won/tied/lost
    (tables/stats.py, as the paired tables compute them)."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    interval = t_interval(d)
    won, tied, lost = won_tied_lost(d)
    return {"mean_difference": interval.mean, "ci95": interval.half_width, "wilcoxon_p": wilcoxon_p(d),
            "won": won, "tied": tied, "lost": lost, "episodes": len(d)}


def train_alternating(experiments: dict[str, Experiment], folder: Path, args: argparse.Namespace,
                      report: dict[str, Any], began: float) -> int:
    """Train every cell to the same iteration count, a chunk at a time, while the budget allows; returns it."""
    done, chunk_s = 0, 0.0
    train_budget = args.budget_s - args.test_reserve_s
    while done == 0 or time.perf_counter() - began + chunk_s <= train_budget:
        target = done + args.chunk
        t0 = time.perf_counter()
        for row, exp in experiments.items():
            exp.protocol = dataclasses.replace(exp.protocol, iterations=target)
            summary = exp.train(folder / f"{row}.pt", progress=False)
            report["rows"][row]["training"] = {k: summary[k] for k in ("iterations", "seconds", "final_loss",
                                                                       "final_accuracy", "execution", "cuda_graph")}
        chunk_s, done = time.perf_counter() - t0, target
        report["iterations"] = done
        write_report(report, args.out)
        print(f"trained both to {done} iterations ({chunk_s:.0f} s for the last chunk)", file=sys.stderr, flush=True)
    return done


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, test, compare; the report."""
    began = time.perf_counter()
    protocol = load_protocol(args.protocol, args.preset, parse_overrides(args.overrides))
    experiments = {row: build_experiment(protocol, "maml", reg, seed=args.seed, device=args.device,
                                         data_root=args.data_root) for row, reg in ROWS.items()}
    report: dict[str, Any] = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__, "precision": precision_settings(), "protocol": protocol.to_dict(),
        "budget_s": args.budget_s, "episodes": args.episodes, "seed": args.seed, "rows": {r: {} for r in ROWS}}
    with tempfile.TemporaryDirectory() as folder:
        train_alternating(experiments, Path(folder), args, report, began)
    for row, exp in experiments.items():
        t0 = time.perf_counter()
        result = exp.test(episodes=args.episodes, progress=False)
        report["rows"][row]["test"] = {**result, "seconds": time.perf_counter() - t0}
        write_report(report, args.out)
    accuracies = [report["rows"][r]["test"]["accuracies"] for r in ROWS]
    report["paired"] = paired_summary(*accuracies)
    report["elapsed_s"] = time.perf_counter() - began
    write_report(report, args.out)
    return report


def render(report: dict[str, Any]) -> str:
    """A few lines: setting, each row, the paired difference."""
    lines = [f"{report['protocol']['name']} ({report['device_name']}, torch {report['torch']}): "
             f"{report['iterations']} iterations each, {report['episodes']} shared test episodes, "
             f"{report['elapsed_s']:.0f} s"]
    for row, r in report["rows"].items():
        t = r["training"]
        lines.append(f"  {row:20s} {r['test']['mean']:.2f} ± {r['test']['ci95']:.2f}   "
                     f"({1000 * t['seconds'] / t['iterations']:.1f} ms/iteration, test {r['test']['seconds']:.0f} s)")
    p = report["paired"]
    lines.append(f"  paired (meta-dropout - MAML): {p['mean_difference']:+.2f} ± {p['ci95']:.2f}, Wilcoxon p = "
                 f"{p['wilcoxon_p']:.2g}, won/tied/lost {p['won']:.0%}/{p['tied']:.0%}/{p['lost']:.0%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the check, print the summary, write the JSON; 2 on bad input."""
    return report_main(parse_args(argv), run, render)


if __name__ == "__main__":
    sys.exit(main())
