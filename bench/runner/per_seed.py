"""Seed by seed, a learning-curve table's row against its reference: at every evaluated iteration each seed's
accuracies and its episode-level paired difference (mean ± 95% CI, Wilcoxon p), and between two iterations how
many seeds of the reference went down (every seed of it, paired or not). The tables show the mean over seeds;
this shows whether the seeds agree.

    python -m bench.runner.per_seed --results DIR [--table curves --row meta_dropout --versus maml
                                             --column omniglot_20w1s --drop-between 2000 4000]

writes DIR/tables/<table>_per_seed.md and .json and prints the Markdown."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.runner.cells import expand
from bench.runner.sweep import placed_results
from bench.store.results import ResultStore
from bench.util.atomic import write_text_atomic
from bench.util.errors import UserError
from tables.aggregate import results_by_cell
from tables.defs import load_table_def
from tables.figures.curves import curve_points
from tables.markup import MARKDOWN, fmt_interval, fmt_p
from tables.paired import compare
from tables.stats import Interval


def _by_seed(records: list[dict]) -> dict[int, dict]:
    return {int(r["seed"]): r for r in records if r.get("status") == "ok"}


def _accuracy(record: dict, iteration: int) -> float | None:
    return next((float(p["mean"]) for p in curve_points(record) if p["iteration"] == iteration), None)


def per_seed(results: list[dict], table: str, row: str, versus: str, column: str) -> list[dict]:
    """One entry per (seed, iteration) both rows have: their accuracies and the paired difference."""
    grouped = results_by_cell(load_table_def(table), results)
    rows, refs = _by_seed(grouped.get((row, column), [])), _by_seed(grouped.get((versus, column), []))
    out = []
    for seed in sorted(set(rows) & set(refs)):
        iterations = sorted({p["iteration"] for p in curve_points(rows[seed])}
                            & {p["iteration"] for p in curve_points(refs[seed])})
        for iteration in iterations:
            c = compare(table, row, versus, column, [rows[seed]], [refs[seed]], ("iteration", iteration))
            out.append({"seed": seed, "iteration": iteration, "row": _accuracy(rows[seed], iteration),
                        "versus": _accuracy(refs[seed], iteration), "status": c.status, "reason": c.reason,
                        "diff": c.episodes.mean if c.ok else None, "low": c.episodes.low if c.ok else None,
                        "high": c.episodes.high if c.ok else None, "p_wilcoxon": c.wilcoxon if c.ok else None,
                        "episodes": c.n_episodes, "won_tied_lost_pct": [100 * f for f in c.won_tied_lost] if c.ok else None})
    return out


def drops(results: list[dict], table: str, versus: str, column: str, before: int, after: int) -> list[dict]:
    """Per seed of the reference row (paired or not), its accuracy at `before` and `after` and whether it went
    down."""
    refs = _by_seed(results_by_cell(load_table_def(table), results).get((versus, column), []))
    out = []
    for seed, record in sorted(refs.items()):
        at_before, at_after = _accuracy(record, before), _accuracy(record, after)
        if at_before is not None and at_after is not None:
            out.append({"seed": seed, "before": at_before, "after": at_after, "down": at_after < at_before})
    return out


def render(entries: list[dict], went_down: list[dict], row: str, versus: str, column: str, before: int,
           after: int) -> str:
    """The per-seed table and the count of seeds whose reference went down, as Markdown."""
    m = MARKDOWN
    lines = [f"### Per seed: {row} − {versus}, {column}", "",
             f"| Seed | Iterations | {versus} | {row} | Δ ± 95% CI over episodes | Wilcoxon p | won/tied/lost (%) |",
             "|--:|--:|--:|--:|--:|--:|--:|"]
    for e in entries:
        if e["diff"] is None:
            lines.append(f"| {e['seed']} | {e['iteration']:,} | | | {e['status']}: {e['reason']} | | |")
            continue
        interval = fmt_interval(Interval(e["diff"], e["low"], e["high"], e["p_wilcoxon"]), m)
        wtl = "/".join(f"{v:.0f}" for v in e["won_tied_lost_pct"])
        lines.append(f"| {e['seed']} | {e['iteration']:,} | {e['versus']:.2f} | {e['row']:.2f} | {interval} | "
                     f"{fmt_p(e['p_wilcoxon'])} | {wtl} |")
    down = [d for d in went_down if d["down"]]
    lines += ["", f"{versus} at {after:,} below its accuracy at {before:,}: {len(down)} of {len(went_down)} seeds ("
              + "; ".join(f"seed {d['seed']}: {d['before']:.2f} → {d['after']:.2f}" for d in went_down) + ")."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module's docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--table", default="curves")
    ap.add_argument("--preset", default="cpu_study")
    ap.add_argument("--row", default="meta_dropout")
    ap.add_argument("--versus", default="maml")
    ap.add_argument("--column", default="omniglot_20w1s")
    ap.add_argument("--drop-between", nargs=2, type=int, default=[2000, 4000], metavar=("BEFORE", "AFTER"))
    args = ap.parse_args(argv)
    try:
        store = ResultStore(args.results)
        results = placed_results(store, expand([args.table], args.preset, 1, {}))
        placed = [r for r in results if r["table"] == args.table]
        entries = per_seed(placed, args.table, args.row, args.versus, args.column)
        if not entries:
            raise UserError(f"no finished pair of {args.row} and {args.versus} in {args.column} in {args.results}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    went_down = drops(placed, args.table, args.versus, args.column, *args.drop_between)
    markdown = render(entries, went_down, args.row, args.versus, args.column, *args.drop_between)
    out = Path(args.results) / "tables" / f"{args.table}_per_seed"
    write_text_atomic(out.with_suffix(".md"), markdown)
    write_text_atomic(out.with_suffix(".json"), json.dumps({"entries": entries, "drops": went_down}, indent=1))
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
