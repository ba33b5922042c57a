"""Writing a matplotlib figure as PNG and PDF, atomically."""
from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from bench.util.atomic import atomic_path


def save_figure(fig: Figure, out_dir: str | os.PathLike, name: str, dpi: int = 150) -> list[Path]:
    """Write <out_dir>/<name>.png and .pdf (each through a temporary file); returns the two paths."""
    paths = []
    for fmt in ("png", "pdf"):
        path = Path(out_dir) / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
        paths.append(path)
    return paths
