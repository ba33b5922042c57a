"""The paper's figures by definition name: each module's write(fig_def, results, ctx) draws it from the placed
results (and, for Figs. 4, 6 and 7, the trained cells' checkpoints); modules load only when drawn."""
from __future__ import annotations

import importlib
from pathlib import Path

from tables.figures.files import save_figure
from tables.figures.context import FigureContext

FIGURES = {"fig4": "tables.figures.fig4_boundary", "fig5": "tables.figures.fig5_robustness", "fig6": "tables.figures.fig6_decoder",
           "fig7": "tables.figures.fig7_features"}


def write_figure_set(name: str, fig_def: dict, results: list[dict], ctx: FigureContext) -> list[Path]:
    """Draw figure `name` into ctx.out_dir as PNG and PDF; returns the files. A module's render() gives one
    figure; a module with its own write() (Figure 5: the published panels and an extra) writes several."""
    module = importlib.import_module(FIGURES[name])
    if hasattr(module, "write"):
        return module.write(fig_def, results, ctx)
    return save_figure(module.render(fig_def, results, ctx), ctx.out_dir, fig_def["name"])
