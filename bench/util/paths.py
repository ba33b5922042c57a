"""The one data-root setting (a command-line flag, else $META_DROPOUT_DATA, else ./data), the cache folder, and the
check that a name which becomes part of a file name cannot leave its folder."""
from __future__ import annotations

import os
import re
from pathlib import Path

from bench.util.errors import UserError

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+,-]*")

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


def plain_name(name: object, what: str) -> str:
    """`name` when it can be a file name inside a folder: letters, digits and _ . = + , - only, not starting with a
    dot (no path separator, no '..'); else a UserError naming `what`."""
    if not isinstance(name, str) or not _PLAIN.fullmatch(name) or ".." in name:
        raise UserError(f"{what} {name!r} cannot name a file: use letters, digits and _ . = + , - only (it becomes "
                        "part of a file name in the results folder)")
    return name


def is_table_file(spec: str) -> bool:
    """Whether a --table entry names a definition file (ends in .yaml / .yml or holds a path separator)."""
    return spec.endswith((".yaml", ".yml")) or "/" in spec or os.sep in spec
