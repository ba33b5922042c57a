"""Rendering paired comparisons: results/tables/paired.md / .tex (every statistic per comparison) and the compact
column block that --paired adds to the Markdown and LaTeX tables."""
from __future__ import annotations

from tables.labels import column_text
from tables.markup import (LATEX, MARKDOWN, Line, Markup, escape_latex, fmt_interval, fmt_p, latex_headers,
                           longtable)
from tables.paired import Comparison, table_comparisons
from tables.run_protocols import off_protocol_note

HEADERS = ["Row", "Reference", "Column", "Seeds", "Episodes", "Δ ± 95% CI (episodes)", "Wilcoxon p",
           "Won / tied / lost (%)", "Δ ± 95% CI (seeds)", "t-test p (seeds)", "Holm p"]


def fmt_wtl(comparison: Comparison) -> str:
    """Percent of episodes won / tied / lost by the row."""
    return "/".join(f"{100 * f:.0f}" for f in comparison.won_tied_lost)


def _labels(table_def: dict, markup: Markup) -> dict[str, str]:
    return {row["id"]: markup.label(row) for row in table_def["rows"]}


def comparison_cells(table_def: dict, comparison: Comparison, markup: Markup) -> list[str]:
    """One line of the paired table: labels, then every statistic (or why there is none)."""
    labels = _labels(table_def, markup)
    head = [labels[comparison.row], labels[comparison.versus], markup.escape(column_text(comparison.column))]
    if not comparison.ok:
        what = markup.missing if comparison.status == "missing" else markup.escape("unpaired")
        return head + [what, markup.escape(comparison.reason)] + [""] * (len(HEADERS) - 5)
    c = comparison
    return head + [str(len(c.seeds)), str(c.n_episodes), fmt_interval(c.episodes, markup), fmt_p(c.wilcoxon),
                   fmt_wtl(c), fmt_interval(c.across_seeds, markup),
                   fmt_p(c.across_seeds.p) if c.across_seeds else "–", fmt_p(c.p_holm)]


def block_cell(comparison: Comparison | None, markup: Markup) -> str:
    """The compact cell of the --paired column block: difference ± CI, Holm p, won/tied/lost."""
    if comparison is None:
        return ""
    if not comparison.ok:
        return markup.missing if comparison.status == "missing" else markup.small("unpaired")
    seeds = f"{len(comparison.seeds)} seeds, " if comparison.basis == "seeds" else ""
    return markup.stack(fmt_interval(comparison.primary, markup),
                        markup.small(f"({seeds}Holm p {fmt_p(comparison.p_holm)}; {fmt_wtl(comparison)})"))


def add_paired_block(lines: list[Line], notes: list[str], table_def: dict, results: list[dict],
                     markup: Markup) -> list[str]:
    """Append the paired column block to the table's run lines (in place) and its note; returns the block's
    column headers (one per protocol column)."""
    by_place = {(c.row, c.column): c for c in table_comparisons(table_def, results)}
    rows = iter(table_def["rows"])
    for line in lines:
        row = next(rows) if line.kind == "run" else None
        line.cells += [block_cell(by_place.get((row["id"], column)), markup) if row else ""
                       for column in table_def["columns"]]
    pm = markup.pm.strip()
    notes.append(f"Paired {markup.delta}: row {markup.minus} its reference row (MAML; Meta-SGD for Meta-SGD rows) on the "
                 f"same test episodes: mean difference {pm} 95{markup.pct} CI (over seeds when there are several, "
                 "else over episodes), Holm-adjusted p within the table (t-test over seeds, else Wilcoxon "
                 "signed-rank), and the percent of episodes won/tied/lost. Details: paired.md.")
    return [f"{markup.delta} {column_text(c)}" for c in table_def["columns"]]


def _notes(markup: Markup) -> list[str]:
    pm = markup.pm.strip()
    return [f"{markup.delta} = row {markup.minus} reference, per test episode, paired by the episode fingerprint; "
            f"episodes: mean {pm} t-interval over all paired episodes (all seeds pooled); seeds: mean of the per-seed "
            f"mean differences {pm} t-interval over seeds (the honest error bar of a training method; 2+ seeds).",
            "Wilcoxon p: two-sided signed-rank test over the paired episodes (zero differences dropped); "
            "Holm p: the primary p (seeds' t-test with 2+ seeds, else Wilcoxon) adjusted by Holm within the table.",
            f"Won / tied / lost: percent of episodes where the row is more, equally, less accurate. "
            f"{markup.missing}: a side has no result yet; unpaired: the two cells were not tested on the same episodes."]


def render_paired_markdown(table_defs: list[dict], results: dict[str, list[dict]]) -> str:
    """paired.md: one table of comparisons per table definition, then the notes."""
    out = ["# Paired comparisons with the reference rows", ""]
    for table_def in table_defs:
        comparisons = table_comparisons(table_def, results.get(table_def["name"], []))
        if not comparisons:
            continue
        out += [f"### {table_def['name']}: {table_def.get('title_md', table_def['title'])}", "",
                "| " + " | ".join(HEADERS) + " |", "|" + "|".join([":--"] * 3 + ["--:"] * (len(HEADERS) - 3)) + "|"]
        out += ["| " + " | ".join(comparison_cells(table_def, c, MARKDOWN)) + " |" for c in comparisons]
        note = off_protocol_note(table_def, results.get(table_def["name"], []))
        out += ["", f"*{note}*"] if note else []
        out.append("")
    return "\n".join(out + [f"- {note}" for note in _notes(MARKDOWN)]) + "\n"


def _latex_cells(table_def: dict, comparison: Comparison) -> list[str]:
    """comparison_cells in LaTeX; the reason a comparison has no statistics spans the statistics' columns."""
    cells = comparison_cells(table_def, comparison, LATEX)
    if comparison.ok:
        return cells
    return cells[:4] + [f"\\multicolumn{{{len(HEADERS) - 4}}}{{l}}{{{cells[4]}}}"]


def render_paired_latex(table_defs: list[dict], results: dict[str, list[dict]]) -> str:
    """paired.tex: the same tables as LaTeX fragments (booktabs longtables)."""
    out = []
    for table_def in table_defs:
        comparisons = table_comparisons(table_def, results.get(table_def["name"], []))
        if comparisons:
            body = [" & ".join(_latex_cells(table_def, c)) + r" \\" for c in comparisons]
            note = off_protocol_note(table_def, results.get(table_def["name"], []))
            out.append(longtable(f"Paired comparisons with the reference rows: {table_def['title']}",
                                 f"tab:paired-{table_def['name']}", f"@{{}}lll*{{{len(HEADERS) - 3}}}{{r}}@{{}}",
                                 latex_headers(HEADERS), body, _notes(LATEX) + ([escape_latex(note)] if note else [])))
    return "\n".join(out)
