"""Result tables (Markdown + LaTeX) and the paper's figures for the Meta-Dropout reproduction, beside its numbers."""
from tables.aggregate import aggregate, aggregate_robustness
from tables.defs import attacks_of, cells, load_table_def, row_columns
from tables.figures.fig5_robustness import plot_robustness
from tables.latex import latex_document, render_latex
from tables.paper import cited_rows, load_paper_numbers, paper_runs
from tables.render import render_markdown, write_tables

__all__ = ["aggregate", "aggregate_robustness", "attacks_of", "cells", "cited_rows", "latex_document", "load_paper_numbers",
           "load_table_def", "paper_runs", "plot_robustness", "render_latex", "render_markdown", "row_columns",
           "write_tables"]
