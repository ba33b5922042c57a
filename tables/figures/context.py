"""What every figure shares: the trained cells it reads and a cache of its computed data, its caption, the panel of
a missing result, and image grids with colour-coded frames and a legend (files: tables.figures.files)."""
from __future__ import annotations

import hashlib
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Patch, Rectangle

from bench.util.atomic import atomic_path
from bench.store.results import ResultStore
from tables.run_protocols import SMOKE_NOTE, is_smoke

KIND_COLORS = ("black", "tab:blue", "tab:orange", "tab:green", "tab:red")


@dataclass
class FigureContext:
    """Where a figure is written, the results folder its cells' checkpoints are in, the data and the device its
    own work runs on."""

    out_dir: Path
    store: ResultStore
    data_root: str | None = None
    device: str = "cpu"

    def cached(self, key: dict, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """A figure's computed arrays for `key` (cell, settings, version): from results/figures/ when there,
        else computed and stored (atomically); the figure's own work runs once per cell and setting."""
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = self.store.root / "figures" / f"{key['figure']}-{digest}.npz"
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        except (OSError, ValueError, EOFError):
            pass
        data = compute()
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **data)
        return data


def caption(fig: Figure, fig_def: dict, text: str, size: float = 8.5) -> None:
    """The figure's caption above its panels, wrapped to the figure's width; a figure of cells that ran on
    synthetic data (smoke) says so first and carries a SMOKE watermark."""
    if is_smoke(fig_def):
        text = f"{SMOKE_NOTE}. {text}"
        fig.text(0.5, 0.5, "SMOKE", ha="center", va="center", fontsize=90, color="0.5", alpha=0.15, rotation=25)
    fig.suptitle(textwrap.fill(" ".join(text.split()), width=int(fig.get_figwidth() * 108 / size)), fontsize=size)


def find_result(results: list[dict], row: str, column: str) -> dict | None:
    """The placed result of (row, column) with the lowest seed, or None."""
    found = [r for r in results if r["row"] == row and r["column"] == column]
    return min(found, key=lambda r: r["seed"]) if found else None


def no_result(ax: Axes, title: str) -> None:
    """A panel whose cell has no result yet says so (its labels and legend are still drawn by the caller)."""
    ax.text(0.5, 0.5, f"no result yet:\n{title}", ha="center", va="center", transform=ax.transAxes, fontsize=9)


def preset_settings(fig_def: dict, key: str, result: dict) -> dict:
    """fig_def[key], updated by fig_def['presets'][<the cell's preset>][key] when given (e.g. short for smoke)."""
    preset = result["config"].get("preset", "paper")
    return {**fig_def[key], **fig_def.get("presets", {}).get(preset, {}).get(key, {})}


def draw_montage(ax: Axes, tiles: list[list[np.ndarray]], row_labels: list[str], col_labels: list[str],
                 row_kinds: list[str] | None = None, col_kinds: list[str] | None = None,
                 kind_labels: dict[str, str] | None = None, cmap: str = "gray_r", pad: int = 2) -> AxesImage:
    """An image grid in one axes: tiles[row][col] are [C, H, W] (or [H, W]) arrays in [0, 1]; rows and columns
    labelled by ticks; each tile framed in its row's or column's kind colour, the kinds in a legend."""
    def plane(t: np.ndarray) -> np.ndarray:
        return t[0] if t.ndim == 3 and t.shape[0] == 1 else (t.transpose(1, 2, 0) if t.ndim == 3 else t)

    first = plane(tiles[0][0])
    h, w = first.shape[:2]
    rows, cols = len(tiles), len(tiles[0])
    background = np.nan if first.ndim == 2 else 1.0                   # blank (grey maps) or white (RGB)
    canvas = np.full(((h + pad) * rows + pad, (w + pad) * cols + pad, *first.shape[2:]), background)
    for r, line in enumerate(tiles):
        for c, tile in enumerate(line):
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            canvas[top:top + h, left:left + w] = np.clip(plane(tile), 0, 1)
    image = ax.imshow(canvas, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([pad + c * (w + pad) + w / 2 - 0.5 for c in range(cols)], col_labels, fontsize=7)
    ax.set_yticks([pad + r * (h + pad) + h / 2 - 0.5 for r in range(rows)], row_labels, fontsize=7)
    kinds = row_kinds or col_kinds or ["tile"] * rows
    order = list(dict.fromkeys(kinds))
    for r in range(rows):
        for c in range(cols):
            kind = row_kinds[r] if row_kinds else (col_kinds[c] if col_kinds else "tile")
            ax.add_patch(Rectangle((pad + c * (w + pad) - 1, pad + r * (h + pad) - 1), w + 1, h + 1, fill=False,
                                   edgecolor=KIND_COLORS[order.index(kind) % len(KIND_COLORS)], linewidth=1.2))
    labels = kind_labels or {}
    ax.legend(handles=[Patch(fill=False, edgecolor=KIND_COLORS[i % len(KIND_COLORS)], label=labels.get(k, k))
                       for i, k in enumerate(order)], fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12),
              ncol=len(order), frameon=False)
    return image
