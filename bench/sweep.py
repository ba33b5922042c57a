"""The run_all.py workflow: tables -> cells -> checks -> (estimate | run) -> Markdown, LaTeX and Figure 5.
Everything a run needs is checked before the first cell starts; the tables are rendered from every record in the
results folder that fits them, whatever subset this invocation ran."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from tabulate import tabulate

from bench.atomic import write_text_atomic
from bench.cells import expand
from bench.errors import UserError
from bench.estimate import cell_seconds, human
from bench.execution import execute
from bench.protocol import identity, parse_overrides
from bench.results import ResultStore
from regularizers import build_regularizer
from tables import latex_document, load_table_def, plot_robustness, render_latex, write_tables

TABLE_NAMES = {"1": "table1", "2": "table2", "3": "table3", "fig5": "fig5"}
RESULT_FOLDERS = ("cells", "checkpoints", "locks", "tables")
NAMED_AT_MOST = 5             # busy or failed cells named in one message


def table_names(spec: str) -> list[str]:
    """'all', '2', 'fig5' or '1,3' -> table definition names."""
    keys = list(TABLE_NAMES) if spec == "all" else [s.strip() for s in spec.split(",")]
    unknown = [k for k in keys if k not in TABLE_NAMES]
    if unknown:
        raise UserError(f"unknown table {', '.join(unknown)}; choose from {', '.join(TABLE_NAMES)} or all")
    return [TABLE_NAMES[k] for k in keys]


def check_counts(args: argparse.Namespace) -> None:
    """--jobs and --seeds are counts: at least 1."""
    for flag, value in (("--jobs", args.jobs), ("--seeds", args.seeds)):
        if value < 1:
            raise UserError(f"{flag} {value} is not allowed: {flag} must be an integer >= 1")


def check_results_folder(root: Path, writable: bool) -> None:
    """--results must be a folder (created if missing) that this user can write in, when the run writes."""
    if root.exists() and not root.is_dir():
        raise UserError(f"--results {root} is a file, not a folder; give a folder (it is created if missing)")
    if not writable:
        return
    for folder in [root] + [root / sub for sub in RESULT_FOLDERS if (root / sub).is_dir()]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
            os.close(fd)
            os.remove(probe)
        except OSError as err:
            raise UserError(f"results folder {folder} is not writable ({err.strerror}); free space or fix its "
                            "permissions, or choose another --results") from None


def check_rows(cells: list[dict]) -> None:
    """Every row's regularizer and hyper-parameters exist and are in range (a row naming a wrong one fails here,
    before any cell runs)."""
    seen = set()
    for cell in cells:
        key = (cell["regularizer"], json.dumps(cell["hyper"], sort_keys=True))
        if key not in seen:
            seen.add(key)
            try:
                build_regularizer(cell["regularizer"], cell["hyper"])
            except (UserError, TypeError) as err:
                place = cell["places"][0]
                raise UserError(f"table {place['table']}, row '{place['row']}': {err}") from None


def _setting(config: dict) -> str:
    """Everything that shapes the result except the seed (the protocol's identity, learner, regularizer,
    hyper-parameters), as one comparable string."""
    return json.dumps([identity(config["protocol"])] + [config[k] for k in ("learner", "regularizer", "hyper")],
                      sort_keys=True)


def placed_results(store: ResultStore, table_cells: list[dict]) -> list[dict]:
    """Every record in the folder (any seed, results and failures) of the settings of `table_cells` (one cell
    per setting), one copy per place it fills."""
    by_setting: dict[str, list[dict]] = {}
    for record in store.all_results().values():
        by_setting.setdefault(_setting(record["config"]), []).append(record)
    return [{**record, **place} for cell in table_cells for record in by_setting.get(_setting(cell), [])
            for place in cell["places"]]


def render(store: ResultStore, table_cells: list[dict], tables: list[str]) -> list[Path]:
    """Write every asked table (and Figure 5) from the records in the folder; returns the files. A write that
    fails (full disk) is one UserError line; tables already written stay as they were."""
    out_dir = store.root / "tables"
    placed = placed_results(store, table_cells)
    written, fragments = [], []
    try:
        for table in tables:
            table_def = load_table_def(table)
            results = [r for r in placed if r["table"] == table]
            if table == "fig5":
                written += plot_robustness(table_def, results, out_dir)
                continue
            written += write_tables(table_def, results, out_dir)
            fragments.append(render_latex(table_def, results))
        if fragments:
            written.append(write_text_atomic(out_dir / "tables.tex", latex_document(fragments)))
    except OSError as err:
        raise UserError(f"cannot write the tables in {out_dir} ({err.strerror}); the cell results are kept: free "
                        "space and run again with --render-only") from None
    return written


def dry_run(cells: list[dict], states: dict[str, str], kind: str) -> float:
    """Print the cells with their state or estimated time; returns the total estimate of what is left (seconds)."""
    rows, total = [], 0.0
    for cell in cells:
        state = states[cell["name"]]
        seconds = cell_seconds(cell["protocol"], kind) if state == "todo" else 0.0
        total += seconds
        rows.append([cell["name"], ", ".join(f"{p['table']}:{p['row']}" for p in cell["places"]),
                     human(seconds) if state == "todo" else state])
    print(tabulate(rows, headers=["cell", "fills", f"estimate ({kind})"]))
    print(f"{len(cells)} cells, {_count(states, 'done')} done, {_count(states, 'failed')} failed; about "
          f"{human(total)} left on one {'GPU' if kind == 'gpu' else 'CPU machine'} (rough: scaled from measured steps)")
    return total


def _count(states: dict[str, str], state: str) -> int:
    return sum(s == state for s in states.values())


def _named(names: list[str]) -> str:
    more = len(names) - NAMED_AT_MOST
    return ", ".join(names[:NAMED_AT_MOST]) + (f" and {more} more" if more > 0 else "")


def report(statuses: list[dict], states: dict[str, str]) -> int:
    """Print what failed or was busy; returns 1 when a selected cell has failed (now or before), else 0."""
    failed = [s for s in statuses if s["status"] == "failed"]
    for s in failed:
        print(f"failed: {s['name']}: {s['error']}", file=sys.stderr)
    before = [name for name, state in states.items() if state == "failed"]
    if before:
        print(f"{len(before)} cells failed in an earlier run and were skipped (see the tables' notes; "
              f"--retry-failed runs them again): {_named(before)}", file=sys.stderr)
    busy = [f"{s['name']} ({s.get('owner', '?')})" for s in statuses if s["status"] == "busy"]
    if busy:
        print(f"{len(busy)} cells are running in another process; run again later to include them: {_named(busy)}",
              file=sys.stderr)
    return 1 if failed or before else 0


def sweep(args: argparse.Namespace) -> int:
    """Check everything, expand the tables into cells, run what is left, render; returns the exit code."""
    tables = table_names(args.table)
    check_counts(args)
    overrides = parse_overrides(args.set)
    table_cells = expand(tables, args.preset, 1, overrides)
    check_rows(table_cells)
    cells = expand(tables, args.preset, args.seeds, overrides, args.only)
    store = ResultStore(args.results)
    check_results_folder(store.root, writable=not args.dry_run)
    has_gpu = args.device not in ("cpu",) and torch.cuda.is_available()
    kind = "gpu" if has_gpu or (args.backend == "ray" and args.device == "cuda") else "cpu"
    states = {c["name"]: store.state(c, args.retry_failed) for c in cells}
    if args.dry_run:
        dry_run(cells, states, kind)
        return 0
    statuses = []
    todo = [c for c in cells if states[c["name"]] == "todo"]
    if todo and not args.render_only:
        left = sum(cell_seconds(c["protocol"], kind) for c in todo)
        if args.preset != "smoke" and not has_gpu and args.backend == "local" and not args.yes:
            raise UserError(f"no GPU: the {len(todo)} cells of preset '{args.preset}' would take about "
                            f"{human(left)} on this CPU; use --preset smoke, a GPU, --backend ray, or --yes")
        print(f"{len(cells)} cells: {_count(states, 'done')} done, {_count(states, 'failed')} failed before, "
              f"{len(todo)} to run (about {human(left)} on {kind})", file=sys.stderr)
        try:
            statuses = execute(todo, str(store.root), args.data_root, args.backend, args.device, args.jobs,
                               args.ray_address, args.retry_failed)
        finally:
            store.release_dead_locks()
    for path in render(store, table_cells, tables):
        print(f"wrote {path}", file=sys.stderr)
    for table in tables:
        md = store.root / "tables" / f"{table}.md"
        if md.exists():
            print(md.read_text())
    return report(statuses, states)
