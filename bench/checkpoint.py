"""Atomic checkpoints that capture everything a bit-identical resume needs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.atomic import atomic_path


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by atomic_save into CPU memory (generator states must stay on the CPU;
    parameters and optimizer state are copied to their device when loaded)."""
    return torch.load(path, map_location="cpu", weights_only=False)
