"""The statistical reports beside the tables: paired.md / .tex for the rendered tables, claims.md / .tex."""
from __future__ import annotations

from pathlib import Path

from bench.util.atomic import write_text_atomic
from tables.claims import ClaimResult
from tables.claims_table import render_claims_latex, render_claims_markdown
from tables.defs import load_table_def
from tables.figures.figure_set import FIGURES
from tables.paired_table import render_paired_latex, render_paired_markdown



def write_reports(out_dir: Path, placed: dict[str, list[dict]],
                  claims: list[ClaimResult] | None) -> tuple[list[Path], list[str]]:
    """Write paired.md/.tex (the rendered tables' rows against their references; the figures and learning curves
    carry their own comparisons) and, given the claims' verdicts, claims.md/.tex; returns the files and the LaTeX
    fragments for tables.tex."""
    written, fragments = [], []
    table_defs = [d for d in map(load_table_def, placed) if d["name"] not in FIGURES and d.get("kind") != "curves"]
    if table_defs:
        latex = render_paired_latex(table_defs, placed)
        written += [write_text_atomic(out_dir / "paired.md", render_paired_markdown(table_defs, placed)),
                    write_text_atomic(out_dir / "paired.tex", latex)]
        fragments.append(latex)
    if claims is not None:
        latex = render_claims_latex(claims)
        written += [write_text_atomic(out_dir / "claims.md", render_claims_markdown(claims)),
                    write_text_atomic(out_dir / "claims.tex", latex)]
        fragments.append(latex)
    return written, fragments
