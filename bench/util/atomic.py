"""Atomic file writes: write to a temporary file beside the target, then os.replace it into place. The file
gets the mode any new file gets (0666 less the umask), not the temporary file's private 0600."""
from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.util.errors import DiskFull

FILE_MODE = 0o666            # before the umask, as open() creates files


def current_umask() -> int:
    """The process umask (read from /proc on Linux; elsewhere set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode a newly created file has under the current umask."""
    return FILE_MODE & ~current_umask()


def space_left(folder: Path) -> int | None:
    """Bytes an unprivileged writer may still use on folder's file system (None where it cannot be asked)."""
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return stat.f_bavail * stat.f_frsize


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path in path's folder; on success it is flushed to disk and replaces path with the
    umask's mode, on error it is removed. A write that fails on a full file system (ENOSPC, or any error of a
    writer such as torch.save while less than MIN_FREE is left) is DiskFull, one line naming the folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        _raise_if_full(err, path.parent)
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except Exception as err:
        _raise_if_full(err, path.parent)
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


MIN_FREE = 1 << 20            # below this many free bytes a failed write is taken for a full file system


def _raise_if_full(err: BaseException, folder: Path) -> None:
    left = space_left(folder)
    if getattr(err, "errno", None) == errno.ENOSPC or (left is not None and left < MIN_FREE):
        raise DiskFull(f"no space left on the file system of {folder}: free space there and run the same command "
                       "again (finished results are kept, unfinished cells resume)") from err


def write_text_atomic(path: Path, text: str) -> Path:
    """Write text (UTF-8) to path atomically and return path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def append_text(path: Path, text: str) -> None:
    """Append text (UTF-8) to path and flush it, for a log a reader may follow as it grows; a write that fails on
    a full file system is DiskFull."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as err:
        _raise_if_full(err, path.parent)
        raise
