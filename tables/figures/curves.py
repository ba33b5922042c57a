"""Learning curves (--table curves): meta-test accuracy against meta-training iterations with CI bands, and the
paired difference to the reference row at each iteration, as curves.png / .pdf and curves.md."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bench.util.atomic import write_text_atomic
from tables.aggregate import results_by_cell
from tables.defs import row_columns
from tables.figures.files import save_figure
from tables.figures.context import caption
from tables.paired import Comparison, apply_holm, compare, reference_of, reference_pairs
from tables.markup import MARKDOWN, fmt_interval, fmt_p
from tables.run_protocols import SMOKE_NOTE, header_text, is_smoke, off_protocol_note
from tables.paired_table import fmt_wtl
from tables.stats import Interval, t_interval


def curve_points(result: dict) -> list[dict]:
    """A result's evaluations in iteration order: its test_curve, or its final test alone."""
    if result.get("test_curve"):
        return result["test_curve"]
    return [{"iteration": result["config"]["protocol"]["iterations"], **result["test"]}]


def accuracy_curve(seeds: list[dict]) -> list[tuple[int, Interval, int]]:
    """(iteration, mean with its 95% CI, seeds) at every iteration: with one seed the episode CI recorded with the
    result; with several, the mean of the per-seed means with a t-interval over seeds."""
    by_iteration: dict[int, list[dict]] = {}
    for result in seeds:
        for point in curve_points(result):
            by_iteration.setdefault(point["iteration"], []).append(point)
    out = []
    for iteration, points in sorted(by_iteration.items()):
        if len(points) == 1:
            p = points[0]
            interval = Interval(p["mean"], p["mean"] - p["ci95"], p["mean"] + p["ci95"], math.nan)
        else:
            interval = t_interval(np.array([p["mean"] for p in points]))
        out.append((iteration, interval, len(points)))
    return out


def curve_comparisons(table_def: dict, results: list[dict]) -> list[Comparison]:
    """Every row against its reference at every iteration both have, Holm-adjusted within the table."""
    grouped = results_by_cell(table_def, results)
    out = []
    for row, ref, column in reference_pairs(table_def):
        mine, theirs = grouped.get((row, column), []), grouped.get((ref, column), [])
        iterations = sorted({p["iteration"] for r in mine for p in curve_points(r)}
                            & {p["iteration"] for r in theirs for p in curve_points(r)})
        out += [compare(table_def["name"], row, ref, column, mine, theirs, ("iteration", it)) for it in iterations]
    apply_holm(out)
    return out


def _log_x(iterations: list[int]) -> bool:
    return bool(iterations) and min(iterations) > 0 and max(iterations) / min(iterations) >= 4


def _plot_column(axes, table_def: dict, grouped: dict, comparisons: list[Comparison], column: str) -> None:
    top, bottom = axes
    every = []
    for index, row in enumerate(table_def["rows"]):
        curve = accuracy_curve(grouped.get((row["id"], column), []))
        if not curve:
            top.plot([], [], " ", label=f"no results: {row.get('label_md', row['label'])}")
            continue
        x = [it for it, _, _ in curve]
        every += x
        mean = np.array([i.mean for _, i, _ in curve])
        low, high = np.array([i.low for _, i, _ in curve]), np.array([i.high for _, i, _ in curve])
        top.plot(x, mean, marker="o", markersize=3, color=f"C{index}", label=row.get("label_md", row["label"]))
        top.fill_between(x, low, high, color=f"C{index}", alpha=0.2, linewidth=0)
        mine = [c for c in comparisons if c.row == row["id"] and c.column == column and c.ok]
        if mine:
            dx = [c.metric[1] for c in mine]
            bottom.plot(dx, [c.primary.mean for c in mine], marker="o", markersize=3, color=f"C{index}",
                        label=f"{row.get('label_md', row['label'])} − {row_label(table_def, mine[0].versus)}")
            bottom.fill_between(dx, [c.primary.low for c in mine], [c.primary.high for c in mine],
                                color=f"C{index}", alpha=0.2, linewidth=0)
    bottom.axhline(0.0, color="black", linewidth=0.8)
    for ax in axes:
        if _log_x(every):                   # ticks at the evaluated iterations, labelled as run (not 2^9 for 500)
            ax.set_xscale("log", base=2)
            ticks = sorted(set(every))
            ax.set_xticks(ticks, labels=[f"{tick:,}" for tick in ticks])
            ax.minorticks_off()
        ax.set_xlabel("meta-training iterations")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    top.set_title(header_text(table_def, column), fontsize=10)
    top.set_ylabel("meta-test accuracy (%)")
    bottom.set_ylabel("paired difference (points)")


def row_label(table_def: dict, row_id: str) -> str:
    """A row's Markdown label."""
    row = next(r for r in table_def["rows"] if r["id"] == row_id)
    return row.get("label_md", row["label"])


def plot_curves(table_def: dict, results: list[dict], comparisons: list[Comparison],
                out_dir: str | os.PathLike) -> list[Path]:
    """curves.png / .pdf: per column, accuracy vs iterations (95% CI band) over the paired difference to the
    reference row (95% CI band)."""
    grouped = results_by_cell(table_def, results)
    columns = table_def["columns"]
    fig = Figure(figsize=(5.2 * len(columns), 7.0), layout="constrained")
    grid = fig.subplots(2, len(columns), squeeze=False)
    for index, column in enumerate(columns):
        _plot_column(grid[:, index], table_def, grouped, comparisons, column)
    caption(fig, table_def, f"{table_def['title']} (bands: 95% CI; same test episodes at every point)", size=10)
    return save_figure(fig, out_dir, table_def["name"])


def _seeds_text(count: int, kind: str = "") -> str:
    """' (3 seeds)' after a row's label, or nothing for a row without results."""
    return f" ({count} {kind}seed{'s' if count > 1 else ''})" if count else ""


def render_curves_markdown(table_def: dict, results: list[dict], comparisons: list[Comparison]) -> str:
    """curves.md: per column, accuracy ± CI of every row and the paired difference to the reference at each
    iteration, then the notes."""
    grouped = results_by_cell(table_def, results)
    smoke = f"{SMOKE_NOTE}. " if is_smoke(table_def) else ""
    out = [f"### {table_def['name']}: {smoke}{table_def.get('title_md', table_def['title'])}", "",
           f"![learning curves]({table_def['name']}.png)", ""]
    m = MARKDOWN
    for column in table_def["columns"]:
        rows = [r for r in table_def["rows"] if column in row_columns(table_def, r)]
        curves = {r["id"]: {it: (i, k) for it, i, k in accuracy_curve(grouped.get((r["id"], column), []))} for r in rows}
        diffs = {(c.row, c.metric[1]): c for c in comparisons if c.column == column}
        compared = [r for r in rows if any(key[0] == r["id"] for key in diffs)]
        iterations = sorted({it for curve in curves.values() for it in curve})
        seeds = {r["id"]: max((k for _, k in curves[r["id"]].values()), default=0) for r in rows}
        paired = {r["id"]: max(len(c.seeds) for key, c in diffs.items() if key[0] == r["id"]) for r in compared}
        headers = (["Iterations"] + [row_label(table_def, r["id"]) + _seeds_text(seeds[r["id"]]) for r in rows]
                   + [f"Δ {row_label(table_def, r['id'])} − {row_label(table_def, reference_of(table_def, r))}"
                      + _seeds_text(paired[r["id"]], "paired ") for r in compared])
        out += [f"**{header_text(table_def, column)}**", "", "| " + " | ".join(headers) + " |",
                "|" + "|".join(["--:"] * len(headers)) + "|"]
        for it in iterations:
            cells = [f"{it:,}"]
            for r in rows:
                point = curves[r["id"]].get(it)
                cells.append(m.missing if point is None else f"{point[0].mean:.2f}{m.pm}{point[0].half_width:.2f}")
            for r in compared:
                c = diffs.get((r["id"], it))
                cells.append(m.missing if c is None or not c.ok else
                             f"{fmt_interval(c.primary, m)} (Holm p {fmt_p(c.p_holm)}; {fmt_wtl(c)})")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    notes = ["Accuracy: meta-test accuracy (%) ± 95% CI over episodes (one seed) or t-interval over seeds (several); "
             "every point of a column is evaluated on the same test episodes.",
             "Δ: paired difference to the reference row (points) ± 95% CI, Holm-adjusted p within this table "
             "(Wilcoxon signed-rank with one seed, t-test over seeds with several), and the percent of episodes "
             f"won/tied/lost. {m.missing}: no evaluation at that iteration."]
    off_protocol = off_protocol_note(table_def, [r for r in results if "config" in r])
    if off_protocol:
        notes.append(off_protocol)
    return "\n".join(out + [f"- {note}" for note in notes]) + "\n"


def write_curves(table_def: dict, results: list[dict], out_dir: str | os.PathLike) -> list[Path]:
    """Write <name>.png, .pdf and .md for a curves table definition; returns the files."""
    comparisons = curve_comparisons(table_def, results)
    markdown = render_curves_markdown(table_def, results, comparisons)
    return plot_curves(table_def, results, comparisons, out_dir) + [
        write_text_atomic(Path(out_dir) / f"{table_def['name']}.md", markdown)]
