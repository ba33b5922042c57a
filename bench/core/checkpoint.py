"""Atomic checkpoints that capture everything a bit-identical resume needs."""
from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from bench.util.atomic import atomic_path


class CheckpointUnusable(Exception):
    """A checkpoint that cannot be read or does not fit the learner it should resume."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"checkpoint {path} cannot be used ({reason})")
        self.path, self.reason = path, reason


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by atomic_save into CPU memory (generator states must stay on the CPU;
    parameters and optimizer state are copied to their device when loaded). Only tensors and plain containers are
    built (weights_only): results folders are shared, and a crafted file must not run code when it is read."""
    return torch.load(path, map_location="cpu", weights_only=True)


@contextmanager
def resuming_from(path: Path) -> Iterator[None]:
    """Around reading a checkpoint and applying it: any failure becomes CheckpointUnusable naming the file."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - whatever breaks while resuming, the file is what is wrong
        if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):
            raise CheckpointUnusable(path, "it holds objects other than tensors and plain containers, which are "
                                           "never built: a shared file could run code that way") from err
        first_line = (str(err).strip().splitlines() or [""])[0][:200]
        raise CheckpointUnusable(path, f"{type(err).__name__}: {first_line}") from err
