"""The run_all.py workflow: tables -> cells -> checks -> (estimate | run) -> Markdown, LaTeX and the paper's figures.
Everything a run needs is checked before the first cell starts; the tables are rendered from every record in the
results folder that fits them, whatever subset this invocation ran."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

from bench.runner.arguments import check_arguments, table_names
from bench.util.atomic import write_text_atomic
from bench.store.cell_record import is_failure
from bench.runner.cells import expand, no_match
from bench.util.errors import DiskFull, UserError
from bench.util.paths import is_table_file
from bench.runner.estimate import Estimate, calibrate, human, reference_calibration
from bench.runner.backends import execute, local_devices
from bench.runner.preflight import check_data_for, check_results_folder, check_rows, note_unused_data_root
from bench.store.collect import write_frames
from bench.store.protocol import identity, parse_overrides
from bench.store.results import ResultStore
from bench.runner.run_cell import RunOptions
from regularizers import load_regularizer_file
from tables import latex_document, load_table_def, render_latex, write_tables
from tables.defs import add_table_file
from tables.claims import ClaimResult, claim_tables, evaluate_claims, load_claims, select_claims
from tables.claims_simulation import simulated_claims, simulated_title
from tables.claims_table import render_claims_markdown, verdict_lines
from tables.figures.curves import write_curves
from tables.figures.figure_set import FIGURES, write_figure_set
from tables.figures.context import FigureContext
from tables.reports import write_reports
from tables.run_protocols import with_run_protocols

NAMED_AT_MOST = 5             # busy or failed cells named in one message


def _setting(config: dict) -> str:
    """Everything that shapes the result except the seed (the protocol's identity, learner, regularizer,
    hyper-parameters, the text of a researcher's regularizer file), as one comparable string."""
    source = (config.get("regularizer_file") or {}).get("sha256")
    return json.dumps([identity(config["protocol"])] + [config[k] for k in ("learner", "regularizer", "hyper")]
                      + ([source] if source else []), sort_keys=True)


def placed_results(store: ResultStore, table_cells: list[dict]) -> list[dict]:
    """Every record in the folder (any seed, results and failures) of the settings of `table_cells` (one cell
    per setting), one copy per place it fills."""
    by_setting: dict[str, list[dict]] = {}
    for record in store.all_results().values():
        by_setting.setdefault(_setting(record["config"]), []).append(record)
    return [{**record, **place} for cell in table_cells for record in by_setting.get(_setting(cell), [])
            for place in cell["places"]]


def render(store: ResultStore, table_cells: list[dict], tables: list[str], paired: bool = False,
           claims: dict | None = None, data_root: str | None = None, device: str = "cpu",
           failures: list[str] | None = None) -> tuple[list[Path], list[ClaimResult] | None]:
    """Write every asked table and figure from the records in the folder, paired.md and, given the claims config,
    claims.md; paired adds the paired column block to the tables. Returns the files and the claims' verdicts (None
    when not asked). Figures 4, 6 and 7 load their cells' final checkpoints and data (their own work runs on `device`,
    once: it is cached); a figure that cannot be drawn is reported in `failures` and the others are still
    written. A write that fails (full disk) is one UserError line; files already written stay as they were."""
    out_dir = store.root / "tables"
    records = placed_results(store, table_cells)
    placed = {table: [r for r in records if r["table"] == table] for table in tables}
    verdicts = evaluate_claims(claims, placed) if claims is not None else None
    context = FigureContext(out_dir, store, data_root, device)
    written, fragments = [], []
    try:
        for table, results in placed.items():
            table_def = with_run_protocols(load_table_def(table), table_cells)
            if table in FIGURES:
                written += _figure(table, table_def, [r for r in results if not is_failure(r)], context, failures)
            elif table_def.get("kind") == "curves":
                written += write_curves(table_def, results, out_dir)
            else:
                written += write_tables(table_def, results, out_dir, paired)
                fragments.append(render_latex(table_def, results, paired))
        reports, report_fragments = write_reports(out_dir, placed, verdicts)
        written += reports
        fragments += report_fragments
        if fragments:
            written.append(write_text_atomic(out_dir / "tables.tex", latex_document(fragments)))
    except (OSError, DiskFull) as err:
        cause = err.__cause__ if isinstance(err, DiskFull) else err
        reason = getattr(cause, "strerror", None) or "No space left on device"
        raise UserError(f"cannot write the tables in {out_dir} ({reason}); the cell results are kept: free "
                        "space and run again with --render-only") from None
    return written, verdicts


def _figure(table: str, fig_def: dict, results: list[dict], context: FigureContext,
            failures: list[str] | None) -> list[Path]:
    """Draw one figure from finished results, timing it; a figure that cannot be drawn goes to `failures`."""
    began, cpu = time.perf_counter(), time.process_time()
    try:
        written = write_figure_set(table, fig_def, results, context)
    except UserError as err:
        (failures if failures is not None else []).append(f"{table}: {err}")
        return []
    print(f"{table}: drawn in {time.perf_counter() - began:.1f} s ({time.process_time() - cpu:.1f} s of CPU)",
          file=sys.stderr)
    return written


def dry_run(cells: list[dict], states: dict[str, str], estimate: Estimate) -> None:
    """Print the cells with their state or estimated time, then the estimate of what is left."""
    rows = [[c["name"], ", ".join(f"{p['table']}:{p['row']}" for p in c["places"]),
             human(estimate.calibration.cell_seconds(c)) if states[c["name"]] == "todo" else states[c["name"]]]
            for c in cells]
    print(tabulate(rows, headers=["cell", "fills", "estimate"]))
    todo = [c for c in cells if states[c["name"]] == "todo"]
    print(f"{len(cells)} cells, {_count(states, 'done')} done, {_count(states, 'failed')} failed; "
          f"{len(todo)} left: {estimate.text(todo)}")


def _count(states: dict[str, str], state: str) -> int:
    return sum(s == state for s in states.values())


def _named(names: list[str]) -> str:
    more = len(names) - NAMED_AT_MOST
    return ", ".join(names[:NAMED_AT_MOST]) + (f" and {more} more" if more > 0 else "")


def report(statuses: list[dict], states: dict[str, str], figure_failures: list[str]) -> int:
    """Print what failed or was busy; returns 1 when a selected cell has failed (now or before) or a figure could
    not be drawn, else 0."""
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
    for failure in figure_failures:
        print(f"figure not drawn: {failure}", file=sys.stderr)
    return 1 if failed or before or figure_failures else 0


def run_options(args: argparse.Namespace, store: ResultStore) -> RunOptions:
    """How this invocation runs its cells: progress bars on a terminal, plain lines in a log; --log."""
    return RunOptions(str(store.root), args.data_root, args.threads, args.retry_failed,
                      "bars" if sys.stderr.isatty() else "lines", args.log)


def _estimate(args: argparse.Namespace, cells: list[dict], kind: str) -> Estimate:
    """The estimate for running `cells` as asked: measured here for local workers, reference figures for Ray."""
    if args.backend == "ray" or not cells:
        return Estimate(reference_calibration(kind), 1, f"one {'GPU' if kind == 'gpu' else 'CPU core'} per cell",
                        kind)
    devices = local_devices(args.device, args.jobs)
    plural = "s" if len(devices) > 1 else ""
    where = (f"{len(devices)} GPU{plural}" if devices[0].startswith("cuda") else
             f"{len(devices)} CPU worker{plural}, {args.threads} thread{'s' if args.threads > 1 else ''} each")
    return Estimate(calibrate(cells, devices[0], args.threads), len(devices), where, kind)


def simulate_claims(args: argparse.Namespace) -> int:
    """--claims --simulate: the verdicts a perfect replication with --seeds seeds would get, with the measured
    spreads of the finished cells in --results where they exist; writes tables/claims_simulated.md."""
    config = select_claims(load_claims(), args.claims)
    store = ResultStore(args.results)
    check_results_folder(store.root, writable=True)
    tables = claim_tables(config)
    overrides = parse_overrides(args.set)
    records = placed_results(store, expand(tables, args.preset, 1, overrides))
    placed = {table: [r for r in records if r["table"] == table] for table in tables}
    results = simulated_claims(config, args.seeds, placed)
    path = write_text_atomic(store.root / "tables" / "claims_simulated.md",
                             render_claims_markdown(results, simulated_title(args.seeds)))
    print(simulated_title(args.seeds) + ":", file=sys.stderr)
    for line in verdict_lines(results):
        print(f"  {line}", file=sys.stderr)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def collect(args: argparse.Namespace) -> int:
    """--collect: write tables/cells.csv and tables/episodes.csv.gz from the records in --results, running no
    cell; prints each path with its row count."""
    try:
        written = write_frames(args.results)
    except OSError as err:
        raise UserError(f"cannot write the tables of {args.results} ({err.strerror}); fix the folder's permissions "
                        "or free space, and run --collect again") from None
    for path, rows in written.items():
        print(f"{path}: {rows} rows")
    return 0


def sweep(args: argparse.Namespace) -> int:
    """Check everything, expand the tables into cells, run what is left, render; returns the exit code."""
    check_arguments(args)
    if args.collect:
        return collect(args)
    if args.simulate:
        return simulate_claims(args)
    for path in args.regularizers:
        load_regularizer_file(path)
    tables = [add_table_file(t) if is_table_file(t) else t for t in table_names(args.table)]
    wanted = args.claims or ("all" if args.table == "all" else None)
    if args.claims:
        tables += [t for t in claim_tables(select_claims(load_claims(), args.claims)) if t not in tables]
    overrides = parse_overrides(args.set)
    table_cells = expand(tables, args.preset, 1, overrides)
    check_rows(table_cells)
    cells = expand(tables, args.preset, args.seeds, overrides, args.only)
    if args.only and not cells:
        raise UserError(no_match(args.only, table_cells))
    store = ResultStore(args.results)
    check_results_folder(store.root, writable=not args.dry_run)
    has_gpu = args.device not in ("cpu",) and torch.cuda.is_available()
    kind = "gpu" if has_gpu or (args.backend == "ray" and args.device == "cuda") else "cpu"
    if args.backend == "local":
        local_devices(args.device, args.jobs)                      # a device this machine lacks: stop now
    states = {c["name"]: store.state(c, args.retry_failed) for c in cells}
    todo = [c for c in cells if states[c["name"]] == "todo"]
    runs = bool(todo) and not args.render_only and not args.dry_run
    if runs and args.preset != "smoke" and not has_gpu and args.backend == "local" and not args.yes:
        left = _estimate(args, todo, kind).text(todo)     # asked before the data is looked for: it needs none
        raise UserError(f"no GPU: the {len(todo)} cells of preset '{args.preset}' would take {left}; use --preset "
                        "smoke, a GPU, --backend ray, or --yes")
    if not args.render_only:
        check_data_for(todo, args.data_root)
    note_unused_data_root(cells, args.data_root)
    if args.dry_run:
        dry_run(cells, states, _estimate(args, todo, kind))
        return 0
    statuses = []
    if runs:
        estimate = _estimate(args, todo, kind)        # the refusal's figure: the calibration is kept a day
        print(f"{len(cells)} cells: {_count(states, 'done')} done, {_count(states, 'failed')} failed before, "
              f"{len(todo)} to run ({estimate.text(todo)})", file=sys.stderr)
        try:
            statuses = execute(todo, run_options(args, store), args.backend, args.device, args.jobs,
                               args.ray_address)
        finally:
            store.release_dead_locks()
    figure_device = "cuda" if has_gpu and args.device in ("auto", "cuda") else "cpu"
    figure_failures: list[str] = []
    claims = None if wanted is None else select_claims(
        load_claims(), wanted, {p["column"] for c in cells for p in c["places"]} if args.only else None)
    written, verdicts = render(store, table_cells, tables, args.paired, claims, args.data_root, figure_device,
                               figure_failures)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    for table in tables:
        md = store.root / "tables" / f"{table}.md"
        if md.exists():
            print(md.read_text())
    if verdicts is not None:
        print("Claims (tables/claims.md):\n" + "\n".join(f"  {line}" for line in verdict_lines(verdicts)))
    return report(statuses, states, figure_failures)
