"""The run_all.py workflow: tables -> cells -> (estimate | run) -> Markdown, LaTeX and the paper's figures."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

from bench.atomic import write_text_atomic
from bench.cells import expand
from bench.errors import UserError
from bench.estimate import cell_seconds, human
from bench.execution import execute
from bench.protocol import parse_overrides
from bench.results import ResultStore
from tables import latex_document, load_table_def, render_latex, write_tables
from tables.claims import claim_tables, load_claims
from tables.curves import write_curves
from tables.figure_set import FIGURES, write_figure_set
from tables.figures import FigureContext
from tables.reports import write_reports

TABLE_NAMES = {"1": "table1", "2": "table2", "3": "table3", "fig4": "fig4", "fig5": "fig5", "fig6": "fig6",
               "fig7": "fig7", "curves": "curves", "choices": "choices"}
PAPER_TABLES = ["1", "2", "3", "fig4", "fig5", "fig6", "fig7"]      # what 'all' means: the paper's tables, figures


def table_names(spec: str) -> list[str]:
    """'all', '2', 'fig5', 'curves', 'choices' (the reproduction's own switches) or '1,3' -> table definition
    names."""
    keys = PAPER_TABLES if spec == "all" else [s.strip() for s in spec.split(",")]
    unknown = [k for k in keys if k not in TABLE_NAMES]
    if unknown:
        raise UserError(f"unknown table {', '.join(unknown)}; choose from {', '.join(TABLE_NAMES)} or all")
    return [TABLE_NAMES[k] for k in keys]


def placed_results(store: ResultStore, cells: list[dict], table: str) -> list[dict]:
    """The existing results of the cells, one copy per place they fill in `table`."""
    out = []
    for cell in cells:
        result = store.read(cell["name"])
        if result is None:
            continue
        for place in cell["places"]:
            if place["table"] == table:
                out.append({**result, **place})
    return out


def render(store: ResultStore, cells: list[dict], tables: list[str], paired: bool = False, claims: bool = False,
           data_root: str | None = None, device: str = "cpu", failures: list[str] | None = None) -> list[Path]:
    """Write every asked table and figure (the learning curves), paired.md and, if asked, claims.md from whatever
    results exist; paired adds the paired column block to the tables. Returns the files. Figures 4, 6 and 7 load
    their cells' final checkpoints and data (their own work runs on `device`, once: it is cached); a figure that
    cannot be drawn is reported in `failures` and the others are still written."""
    out_dir = store.root / "tables"
    written, fragments = [], []
    context = FigureContext(out_dir, store, data_root, device)
    placed = {table: placed_results(store, cells, table) for table in tables}
    for table, results in placed.items():
        table_def = load_table_def(table)
        if table in FIGURES:
            began, cpu = time.perf_counter(), time.process_time()
            try:
                written += write_figure_set(table, table_def, results, context)
            except UserError as err:
                (failures if failures is not None else []).append(f"{table}: {err}")
                continue
            print(f"{table}: drawn in {time.perf_counter() - began:.1f} s ({time.process_time() - cpu:.1f} s of CPU)",
                  file=sys.stderr)
            continue
        if table == "curves":
            written += write_curves(table_def, results, out_dir)
            continue
        written += write_tables(table_def, results, out_dir, paired)
        fragments.append(render_latex(table_def, results, paired))
    reports, report_fragments = write_reports(out_dir, placed, claims)
    written += reports
    fragments += report_fragments
    if fragments:
        written.append(write_text_atomic(out_dir / "tables.tex", latex_document(fragments)))
    return written


def dry_run(cells: list[dict], store: ResultStore, kind: str) -> float:
    """Print the cells with their estimated time; returns the total estimate of what is left (seconds)."""
    rows, total = [], 0.0
    for cell in cells:
        done = store.is_done(cell)
        seconds = 0.0 if done else cell_seconds(cell["protocol"], kind)
        total += seconds
        rows.append([cell["name"], ", ".join(f"{p['table']}:{p['row']}" for p in cell["places"]),
                     "done" if done else human(seconds)])
    print(tabulate(rows, headers=["cell", "fills", f"estimate ({kind})"]))
    print(f"{len(cells)} cells, {sum(store.is_done(c) for c in cells)} done; about {human(total)} left on one "
          f"{'GPU' if kind == 'gpu' else 'CPU machine'} (rough: scaled from measured steps)")
    return total


def sweep(args: argparse.Namespace) -> int:
    """Expand the tables into cells, run what is left, render; returns the exit code."""
    tables = table_names(args.table)
    claims = args.claims or args.table == "all"
    if args.claims:
        tables += [t for t in claim_tables(load_claims()) if t not in tables]
    overrides = parse_overrides(args.set)
    cells = expand(tables, args.preset, args.seeds, overrides, args.only)
    store = ResultStore(args.results)
    has_gpu = args.device not in ("cpu",) and torch.cuda.is_available()
    kind = "gpu" if has_gpu or (args.backend == "ray" and args.device == "cuda") else "cpu"
    if args.dry_run:
        dry_run(cells, store, kind)
        return 0
    statuses = []
    todo = [c for c in cells if not store.is_done(c)]
    if todo and not args.render_only:
        left = sum(cell_seconds(c["protocol"], kind) for c in todo)
        if args.preset != "smoke" and not has_gpu and args.backend == "local" and not args.yes:
            raise UserError(f"no GPU: the {len(todo)} cells of preset '{args.preset}' would take about "
                            f"{human(left)} on this CPU; use --preset smoke, a GPU, --backend ray, or --yes")
        print(f"{len(cells)} cells: {len(cells) - len(todo)} done, {len(todo)} to run "
              f"(about {human(left)} on {kind})", file=sys.stderr)
        statuses = execute(todo, str(store.root), args.data_root, args.backend, args.device, args.jobs,
                           args.ray_address)
    figure_device = "cuda" if has_gpu and args.device in ("auto", "cuda") else "cpu"
    figure_failures: list[str] = []
    for path in render(store, cells, tables, args.paired, claims, args.data_root, figure_device, figure_failures):
        print(f"wrote {path}", file=sys.stderr)
    for table in tables:
        md = store.root / "tables" / f"{table}.md"
        if md.exists():
            print(md.read_text())
    failed = [s for s in statuses if s["status"] == "failed"]
    for s in failed:
        print(f"failed: {s['name']}: {s['error']}", file=sys.stderr)
    busy = [s for s in statuses if s["status"] == "busy"]
    if busy:
        print(f"{len(busy)} cells are running in another process; run again later to include them", file=sys.stderr)
    for failure in figure_failures:
        print(f"figure not drawn: {failure}", file=sys.stderr)
    return 1 if failed or figure_failures else 0
