"""Figure 5 as published: meta-test accuracy under fast gradient attacks of growing size, one panel per
(protocol, attack norm) of the definition's `panels`; panels marked `extra` (not in the published figure) go to
<name>_extra. Attack sizes are in pixel units on the [0, 1] scale."""
from __future__ import annotations

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tables.aggregate import aggregate_robustness
from tables.figures.files import save_figure
from tables.figures.context import FigureContext, caption
from tables.labels import column_text
from tables.run_protocols import is_smoke, run_text

NORM_TEXT = {"linf": r"$\ell_\infty$", "l2": r"$\ell_2$", "l1": r"$\ell_1$"}


def _title(fig_def: dict, panel: dict) -> str:
    """The panel's title; on synthetic data (smoke) the protocol actually run and the norm, over the column it
    stands in for (two short lines that fit the panel's width)."""
    if is_smoke(fig_def):
        ran = run_text(fig_def["run_protocols"][panel["column"]])
        return f"{ran}, {NORM_TEXT[panel['norm']]}\n(for {column_text(panel['column'])})"
    return panel["title"]


def _panel(ax: Axes, fig_def: dict, curves: pd.DataFrame, panel: dict) -> None:
    rows = {row["id"]: row for row in fig_def["rows"]}
    mine = curves[(curves["column"] == panel["column"]) & (curves["norm"] == panel["norm"])]
    if mine.empty:                                   # nothing to draw: say so on the labelled axes
        ax.text(0.5, 0.5, "no finished cells", ha="center", va="center", transform=ax.transAxes, fontsize=10)
    for index, row_id in enumerate(panel["rows"]):
        row = rows[row_id]
        style = {"color": f"C{index}", "marker": "o", "markersize": 3, **row.get("style", {})}
        curve = curves[(curves["row"] == row_id) & (curves["column"] == panel["column"])
                       & (curves["norm"] == panel["norm"])]
        label = row["label"]
        if curve.empty:
            ax.plot([], [], " ", label=f"no results: {label}")
            continue
        seeds = int(curve["n_seeds"].max())
        ax.plot(curve["epsilon"], curve["mean"], label=label + (f" ({seeds} seeds)" if seeds > 1 else ""), **style)
        ax.fill_between(curve["epsilon"], curve["mean"] - curve["ci"], curve["mean"] + curve["ci"],
                        color=style["color"], alpha=0.15, linewidth=0)
    ax.set_title(_title(fig_def, panel), fontsize=10)
    ax.set_xlabel(rf"attack size $\epsilon$ ({NORM_TEXT[panel['norm']]}, pixels on the [0, 1] scale)", fontsize=8)
    ax.set_ylabel("meta-test accuracy (%)", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5)


def robustness_figure(fig_def: dict, results: list[dict], panels: list[dict]) -> Figure:
    """The panels side by side (mean over seeds, band: mean 95% CI over episodes), captioned with the attack."""
    curves = aggregate_robustness(fig_def, results)
    fig = Figure(figsize=(4.2 * len(panels), 4.3), layout="constrained")
    for ax, panel in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        _panel(ax, fig_def, curves, panel)
    caption(fig, fig_def, f"{fig_def['title']}. {fig_def['caption']}")
    return fig


def plot_robustness(fig_def: dict, results: list[dict], out_dir) -> list:
    """Write <name>.png/.pdf (the published panels) and, when the definition has extra panels,
    <name>_extra.png/.pdf."""
    published = [p for p in fig_def["panels"] if not p.get("extra")]
    extra = [p for p in fig_def["panels"] if p.get("extra")]
    paths = save_figure(robustness_figure(fig_def, results, published), out_dir, fig_def["name"])
    if extra:
        paths += save_figure(robustness_figure(fig_def, results, extra), out_dir, f"{fig_def['name']}_extra")
    return paths


def write(fig_def: dict, results: list[dict], ctx: FigureContext) -> list:
    """Figure 5 needs no trained model: only the robustness curves in the cells' results."""
    return plot_robustness(fig_def, results, ctx.out_dir)
