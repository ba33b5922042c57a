"""Format-neutral table layout: the lines, cell texts and notes that the Markdown and LaTeX renderers share."""
from __future__ import annotations

import math

import pandas as pd

from tables.aggregate import aggregate, failures_by_cell, results_by_cell
from tables.defs import has_paper_numbers, row_columns
from tables.labels import column_text
from tables.markup import Line, Markup, signed
from tables.paired_table import add_paired_block
from tables.paper import Reported, cited_rows
from tables.run_protocols import SMOKE_NOTE, is_smoke, off_protocol_note, result_changes


MAX_FAILURE_NOTES = 10       # failed cells named in a table's notes; the rest are counted


def _measured(record: dict, bold: bool, markup: Markup) -> str:
    if record["n_seeds"] == 0:
        return markup.failed if record["n_failed"] else markup.missing
    text = f"{record['mean']:.2f}{markup.pm}{record['ci']:.2f}"
    if bold:
        text = markup.bold(text)
    if record["n_seeds"] > 1:
        text += " " + markup.small(f"(sd {record['seed_std']:.2f}, n={record['n_seeds']})")
    if record["n_failed"]:
        text += " " + markup.small(f"({record['n_failed']} more failed{markup.failed})")
    if record["n_collapsed"]:
        text += markup.collapsed
    return text


def _bold_rows(frame: pd.DataFrame) -> set[tuple[str, str]]:
    """(row, column) of the single best measured mean of each column; none on a tie, or when the best has a
    failed seed (its mean leaves that seed out)."""
    bold = set()
    for column, group in frame[(frame.n_seeds > 0) & (frame.n_collapsed == 0)].groupby("column"):
        rounded = group["mean"].round(2)
        top = group[rounded == rounded.max()]
        if len(top) == 1 and top.iloc[0]["n_failed"] == 0:
            bold.add((top.iloc[0]["row"], column))
    return bold


def _paper(record: dict, markup: Markup, off_protocol: bool) -> str:
    """The paper's number, with the difference to the measured one unless the cell ran another protocol."""
    if math.isnan(record["paper_mean"]):
        return markup.note(markup.not_reported)
    text = f"{record['paper_mean']:.2f}"
    if not math.isnan(record["paper_ci"]):
        text += f"{markup.pm}{record['paper_ci']:.2f}"
    if not math.isnan(record["diff"]) and not off_protocol:
        text += f" ({markup.delta} {signed(record['diff'], markup)})"
    return markup.note(text)


def _reported(reported: Reported | None, markup: Markup) -> str:
    if reported is None:
        return markup.not_reported
    return reported.mean_text + (f"{markup.pm}{reported.ci_text}" if reported.ci_text else "")


def _run_lines(table_def: dict, frame: pd.DataFrame, markup: Markup, smoke: bool,
               off_protocol: set[tuple[str, str]]) -> list[Line]:
    bold = set() if smoke else _bold_rows(frame)
    paper_lines = not smoke and has_paper_numbers(table_def)
    records = {(r["row"], r["column"]): r for r in frame.to_dict("records")}
    lines: list[Line] = []
    group = None
    for row in table_def["rows"]:
        if row.get("group") != group and row.get("group"):
            lines.append(Line("group", markup.group(row)))
        group = row.get("group")
        measured, paper = [], []
        for column in table_def["columns"]:
            record = records.get((row["id"], column))
            in_row = column in row_columns(table_def, row)
            measured.append(_measured(record, (row["id"], column) in bold, markup) if in_row else "")
            paper.append(_paper(record, markup, (row["id"], column) in off_protocol) if in_row else "")
        lines.append(Line("run", markup.label(row), measured))
        if paper_lines:
            lines.append(Line("paper", markup.note(f"paper ({markup.delta})"), paper))
    return lines


def _cited_lines(table_def: dict, markup: Markup) -> list[Line]:
    cited = cited_rows(table_def["name"])
    if not cited:
        return []
    return [Line("section", "Reported by their papers (not run here)")] + [
        Line("cited", markup.label(row), [_reported(row["cells"].get(c), markup) for c in table_def["columns"]])
        for row in cited]


def _failure_notes(table_def: dict, results: list[dict], markup: Markup) -> list[str]:
    failures = [r for seeds in failures_by_cell(table_def, results).values() for r in seeds]
    if not failures:
        return []
    notes = [f"{markup.failed}: failed, no valid result (never averaged, never bold); the reasons:"]
    for r in failures[:MAX_FAILURE_NOTES]:
        where = f"{r['row']}, {column_text(r['column'])}, seed {r['seed']}"
        notes.append(markup.escape(f"{where}: {r['reason']}"))
    if len(failures) > MAX_FAILURE_NOTES:
        notes.append(markup.escape(f"... and {len(failures) - MAX_FAILURE_NOTES} more: see the cell files "
                                   "(status failed) in the results folder."))
    return notes


def _provenance(table_def: dict, results: list[dict], markup: Markup) -> str | None:
    used = _used(table_def, results)
    if not used:
        return None
    presets = sorted({str(r.get("config", {}).get("preset")) for r in used})
    versions = sorted({str(r.get("code_version"))[:10] for r in used})
    lost = sorted({str(r.get("code_version"))[:10] for r in used if r.get("code_on_main") is False})
    missing = f" (not in main's history: {', '.join(lost)})" if lost else ""
    return markup.escape(f"Runs: preset {', '.join(presets)}; code version {', '.join(versions)}{missing}.")


def _notes(frame: pd.DataFrame, table_def: dict, results: list[dict], markup: Markup, smoke: bool) -> list[str]:
    pm, pct = markup.pm.strip(), markup.pct
    measured = (f"Measured: meta-test accuracy ({pct}), mean over seeds {pm} the 95{pct} CI over episodes "
                "(mean of the per-seed CIs)")
    if smoke:
        notes = [f"{SMOKE_NOTE}: tiny episodes on random synthetic images test that the suite runs; the numbers "
                 "say nothing about the methods, so no paper numbers and no best are shown.", measured + "."]
    else:
        notes = [measured + "; bold: the single best measured mean in its column (none on a tie)."]
        if has_paper_numbers(table_def):
            notes.append(f"paper ({markup.delta}): the paper's reported mean {pm} 95{pct} CI, and "
                         f"{markup.delta} = measured {markup.minus} paper.")
    if (frame.n_seeds > 1).any():
        notes.append("(sd s, n=k): across-seed standard deviation s of the k per-seed means.")
    if (frame.n_seeds == 0).any():
        notes.append(f"{markup.missing}: not run yet (no result for this cell).")
    if (frame.n_collapsed > 0).any():
        notes.append(f"{markup.collapsed}: a seed's model predicts one class for every query of every test episode "
                     "(collapsed: its accuracy is chance whatever it reads; never bold).")
    if cited_rows(table_def["name"]) and not smoke:
        notes.append("Reported by their papers: numbers the paper quotes from other work, not runs of this suite.")
    unreported = has_paper_numbers(table_def) and frame.paper_mean.isna().any()
    if not smoke and (cited_rows(table_def["name"]) or unreported):
        notes.append(f"{markup.not_reported}: not reported by the paper (or by the paper it cites).")
    off_protocol = None if smoke else off_protocol_note(table_def, _used(table_def, results))
    provenance = _provenance(table_def, results, markup)
    return (notes + ([markup.escape(off_protocol)] if off_protocol else []) + _failure_notes(table_def, results, markup)
            + ([provenance] if provenance else []))


def _used(table_def: dict, results: list[dict]) -> list[dict]:
    return [r for seeds in results_by_cell(table_def, results).values() for r in seeds]


def build_lines(table_def: dict, results: list[dict], markup: Markup,
                paired: bool = False) -> tuple[list[Line], list[str], list[str]]:
    """The table's lines (runs, each with its paper line, then any cited block), its notes, and the headers of
    any extra column block (paired: the difference to the reference row on the same episodes); on synthetic data
    (a smoke run) the runs alone, never bold."""
    frame, smoke = aggregate(table_def, results), is_smoke(table_def)
    cited = [] if smoke else _cited_lines(table_def, markup)
    off_protocol = {(r["row"], r["column"]) for r in _used(table_def, results) if result_changes(table_def, r)}
    lines = _run_lines(table_def, frame, markup, smoke, off_protocol) + cited
    notes = _notes(frame, table_def, results, markup, smoke)
    if not paired:
        return lines, notes, []
    return lines, notes, add_paired_block(lines, notes, table_def, results, markup)
