"""Figure 5: meta-test accuracy against the FGSM attack size, one panel per protocol column."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tables.aggregate import aggregate_robustness
from bench.atomic import atomic_path
from tables.defs import row_columns
from tables.run_protocols import SMOKE_NOTE, header_text, is_smoke


def _panel(ax: Axes, fig_def: dict, curves: pd.DataFrame, column: str) -> None:
    for index, row in enumerate(fig_def["rows"]):
        if column not in row_columns(fig_def, row):
            continue
        curve = curves[curves["row"] == row["id"]]
        if curve.empty:
            ax.plot([], [], " ", label=f"no results: {row['label']}")
            continue
        seeds = int(curve["n_seeds"].max())
        label = row["label"] + (f" ({seeds} seeds)" if seeds > 1 else "")
        ax.plot(curve["epsilon"], curve["mean"], marker="o", markersize=3, color=f"C{index}", label=label)
        ax.fill_between(curve["epsilon"], curve["mean"] - curve["ci"], curve["mean"] + curve["ci"],
                        color=f"C{index}", alpha=0.2, linewidth=0)
    ax.set_title(header_text(fig_def, column), fontsize=10)
    ax.set_xlabel(r"FGSM attack size $\epsilon$ (input units)")
    ax.set_ylabel("meta-test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def robustness_figure(fig_def: dict, results: list[dict]) -> Figure:
    """Accuracy vs FGSM epsilon (mean line, 95% episode-CI band) per row, one panel per column; a panel without
    finished cells says so; on synthetic data (smoke) the title and a watermark say so."""
    curves = aggregate_robustness(fig_def, results)
    columns = fig_def["columns"]
    fig = Figure(figsize=(4.8 * len(columns), 4.0), layout="constrained")
    for ax, column in zip(fig.subplots(1, len(columns), squeeze=False)[0], columns):
        panel = curves[curves["column"] == column]
        if panel.empty:                              # nothing to draw: say so instead of empty axes
            ax.text(0.5, 0.5, f"{header_text(fig_def, column)}:\nno finished cells", ha="center", va="center",
                    transform=ax.transAxes, fontsize=11)
            ax.set_axis_off()
            continue
        _panel(ax, fig_def, panel, column)
    smoke = is_smoke(fig_def)
    title = [SMOKE_NOTE] if smoke else []
    fig.suptitle("\n".join(title + [fig_def["title"], "(band: 95% CI over episodes, mean over seeds)"]), fontsize=10)
    if smoke:
        fig.text(0.5, 0.5, "SMOKE", ha="center", va="center", fontsize=90, color="0.5", alpha=0.15, rotation=25)
    return fig


def plot_robustness(fig_def: dict, results: list[dict], out_dir: str | os.PathLike) -> list[Path]:
    """Write the robustness figure as <name>.png and .pdf."""
    fig = robustness_figure(fig_def, results)
    paths = []
    for fmt in ("png", "pdf"):
        path = Path(out_dir) / f"{fig_def['name']}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)
        paths.append(path)
    return paths
