"""The one data-root setting: a command-line flag, else $META_DROPOUT_DATA, else ./data."""
from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "META_DROPOUT_DATA"
CACHE_DIR_ENV = "META_DROPOUT_CACHE"


def data_root(flag: str | os.PathLike | None = None) -> Path:
    """Resolve the data root: the explicit flag wins, then the environment variable, then ./data."""
    if flag:
        return Path(flag).expanduser()
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else Path("data")


def cache_dir() -> Path:
    """Where decoded uint8 arrays are cached: $META_DROPOUT_CACHE, else ~/.cache/meta-dropout-bench (never
    inside the data root, which may be shared or read-only). Cache files are keyed by their source."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "meta-dropout-bench"
