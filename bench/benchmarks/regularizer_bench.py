"""Every registered regularizer for the same short budget on real Omniglot: accuracy with its 95% CI, seconds
per meta-iteration and parameter count side by side.

    python -m bench.benchmarks.regularizer_bench [--data-root DIR] [--iterations N] [--device cpu|cuda] [--out FILE.json]

On CPU the protocol is shrunk to fit about ten minutes on 2 cores (5-way 1-shot, 32 channels, few queries);
on CUDA it is the paper's Omniglot 20-way 1-shot protocol with a short budget."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.api import build_experiment
from bench.util.errors import UserError
from bench.store.protocol import load_protocol
from regularizers import REGISTRY

CPU_OVERRIDES = {"ways": 5, "channels": 32, "queries": 5, "meta_batch": 2, "inner_steps": 3, "mc_test": 10,
                 "test_batch": 10}
DEFAULTS = {"cpu": {"iterations": 20, "episodes": 50}, "cuda": {"iterations": 1000, "episodes": 1000}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", help="folder holding omniglot/ (default: the suite's data root)")
    parser.add_argument("--iterations", type=int, help="meta-training iterations per regularizer "
                        "(default: 20 on cpu, 1000 on cuda)")
    parser.add_argument("--episodes", type=int, help="meta-test episodes (default: 50 on cpu, 1000 on cuda)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--regularizers", nargs="+", default=sorted(REGISTRY), metavar="NAME",
                        help="which registered regularizers, each with its default hyper-parameters (default: all)")
    parser.add_argument("--paper-protocol", action="store_true",
                        help="use the paper's Omniglot 20-way 1-shot protocol on CPU too (slow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


def bench_one(name: str, args: argparse.Namespace, iterations: int, episodes: int) -> dict[str, Any]:
    """Meta-train one regularizer for `iterations`, meta-test on `episodes`; accuracy, timing, size."""
    overrides = {"iterations": iterations, **(CPU_OVERRIDES if args.device == "cpu" and not args.paper_protocol else {})}
    protocol = load_protocol("omniglot_20w1s", overrides=overrides)
    exp = build_experiment(protocol, regularizer=name, seed=args.seed, device=args.device,
                           data_root=args.data_root)
    summary = exp.train(progress=False)
    began = time.perf_counter()
    result = exp.test(episodes=episodes, progress=False)
    return {"regularizer": name, "hyper": exp.learner.reg.hyper, "accuracy": result["mean"],
            "ci95": result["ci95"], "seconds_per_iteration": summary["seconds"] / iterations,
            "test_seconds": time.perf_counter() - began, "parameters": exp.learner.parameter_count(),
            "final_train_accuracy": summary["final_accuracy"]}


def render(rows: list[dict[str, Any]]) -> str:
    """A plain-text table, one regularizer a line."""
    lines = [f"{'regularizer':32s} {'accuracy (%)':>16s} {'s/iter':>8s} {'params':>9s}  hyper"]
    for r in rows:
        acc = f"{r['accuracy']:.2f} ± {r['ci95']:.2f}"
        lines.append(f"{r['regularizer']:32s} {acc:>16s} {r['seconds_per_iteration']:8.3f} {r['parameters']:9d}  "
                     f"{json.dumps(r['hyper'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Benchmark the regularizers, print the table, write JSON; 2 on bad input."""
    args = parse_args(argv)
    unknown = sorted(set(args.regularizers) - set(REGISTRY))
    try:
        if unknown:
            raise UserError(f"unknown regularizer(s) {', '.join(unknown)}; registered: {', '.join(sorted(REGISTRY))}")
        if args.device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda but no CUDA device is visible; use --device cpu")
        iterations = args.iterations or DEFAULTS[args.device]["iterations"]
        episodes = args.episodes or DEFAULTS[args.device]["episodes"]
        rows = []
        for name in args.regularizers:
            rows.append(bench_one(name, args, iterations, episodes))
            print(f"done {name}: {rows[-1]['accuracy']:.2f}%  {rows[-1]['seconds_per_iteration']:.3f} s/iter",
                  file=sys.stderr, flush=True)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    setting = {"device": args.device, "iterations": iterations, "episodes": episodes, "seed": args.seed,
               "protocol": "omniglot_20w1s" + (f" with {CPU_OVERRIDES}" if args.device == "cpu" and not args.paper_protocol
                                               else "")}
    print(f"Omniglot, {setting['protocol']}; {iterations} iterations, {episodes} test episodes, {args.device}")
    print(render(rows))
    if args.out:
        args.out.write_text(json.dumps({"setting": setting, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
