"""The results folder: one JSON per cell (atomic; a result or a recorded failure), checkpoints, and per-cell
locks so that several runs can share a folder without corrupting it or doing the same cell twice. A cell file
that is not a valid record is named in one warning and moved to cells/.invalid/."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from bench.util.atomic import FILE_MODE, write_text_atomic
from bench.data.pixels import PIXEL_UNITS
from bench.store.cell_record import check_record, is_failure
from bench.util.errors import UserError
from bench.util.notice import warn

STALE_LOCK_SECONDS = 2 * 3600      # a lock untouched this long (no heartbeat) is taken over
INVALID = ".invalid"               # where unusable cell files and checkpoints are moved
KEPT_FAILURES = ("non_finite", "diverged")   # the run's own outcome: kept, not run again unless asked


def set_aside(path: Path) -> Path:
    """Move a file into .invalid/ beside it (never overwriting an earlier one there); returns where."""
    folder = path.parent / INVALID
    folder.mkdir(exist_ok=True)
    aside = folder / path.name
    if aside.exists():
        aside = folder / f"{path.stem}.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}{path.suffix}"
    os.replace(path, aside)
    return aside


class ResultStore:
    """results/cells/<name>.json (beside it the training logs <name>.train.csv and <name>.test.csv),
    results/checkpoints/<name>.pt, results/locks/<name>.lock, results/tensorboard/<name>/."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def result_path(self, name: str) -> Path:
        """The cell's result JSON."""
        return self.root / "cells" / f"{name}.json"

    def train_log_path(self, name: str) -> Path:
        """The cell's training curve as CSV, written while it trains."""
        return self.root / "cells" / f"{name}.train.csv"

    def test_log_path(self, name: str) -> Path:
        """The cell's meta-tests (learning-curve points and the final test) as CSV."""
        return self.root / "cells" / f"{name}.test.csv"

    def tensorboard_path(self, name: str) -> Path:
        """The cell's TensorBoard run (with --log tensorboard)."""
        return self.root / "tensorboard" / name

    def checkpoint_path(self, name: str) -> Path:
        """The cell's training checkpoint."""
        return self.root / "checkpoints" / f"{name}.pt"

    def lock_path(self, name: str) -> Path:
        """The cell's lock file."""
        return self.root / "locks" / f"{name}.lock"

    def read(self, name: str) -> dict | None:
        """The cell's record (result or failure), or None when absent. A file that is not a valid record is
        moved aside with a warning and reads as absent; one this user may not read is a UserError."""
        path = self.result_path(name)
        try:
            with open(path, "rb") as f:
                inode, text = os.fstat(f.fileno()).st_ino, f.read()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise UserError(f"cannot read {path} ({err.strerror}); ask its owner to make it readable "
                            "(chmod a+r) or use another --results folder") from None
        try:
            return check_record(json.loads(text), name)
        except ValueError as err:             # not JSON, not UTF-8, or not the shape of a record
            self._set_invalid_aside(path, inode, str(err).splitlines()[0][:200])
            return None

    def _set_invalid_aside(self, path: Path, inode: int, problem: str) -> None:
        try:
            if os.stat(path).st_ino != inode:       # replaced by a writer since it was read: keep the new one
                return
            aside = set_aside(path)
        except FileNotFoundError:                   # another run moved it first
            return
        except OSError as err:
            warn(f"{path} is not a valid cell record ({problem}) and could not be moved aside ({err.strerror}); "
                 "the cell counts as not run")
            return
        warn(f"{path} is not a valid cell record ({problem}); moved it to {aside}; the cell counts as not run")

    def write(self, name: str, record: dict) -> Path:
        """Write the cell's record atomically."""
        return write_text_atomic(self.result_path(name), json.dumps(record, indent=1))

    def write_failure(self, name: str, record: dict) -> bool:
        """Record a failure unless a finished result is there (a failure never replaces a result)."""
        existing = self.read(name)
        if existing is not None and not is_failure(existing):
            return False
        self.write(name, record)
        return True

    def state(self, cell: dict, retry_failed: bool = False) -> str:
        """'done' (a result with every attack, norm and size in pixel units, the cell asks for), 'failed' (a recorded
        non-finite outcome, kept unless retry_failed) or 'todo' (nothing, a partial result, or a failure worth trying
        again)."""
        record = self.read(cell["name"])
        if record is None:
            return "todo"
        if is_failure(record):
            return "failed" if record["kind"] in KEPT_FAILURES and not retry_failed else "todo"
        return "done" if has_attacks(record, cell["attacks"]) else "todo"

    def all_results(self) -> dict[str, dict]:
        """Every valid record (results and failures), by cell name; only the .json files of cells/ are records."""
        folder = self.root / "cells"
        out = {}
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            record = self.read(path.stem)
            if record is not None:
                out[path.stem] = record
        return out

    def try_lock(self, name: str) -> bool:
        """Claim the cell; False if a live run holds it. Stale locks (dead process here, or no heartbeat for
        STALE_LOCK_SECONDS) are taken over. A lock that cannot be written (full disk, no permission) is a
        UserError."""
        path = self.lock_path(name)
        owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for _ in range(2):
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
                except FileExistsError:
                    if not self._stale(path):
                        return False
                    path.unlink(missing_ok=True)
                    continue
                try:
                    with os.fdopen(fd, "w") as f:
                        f.write(owner)
                except OSError:
                    path.unlink(missing_ok=True)
                    raise
                return True
        except OSError as err:
            raise UserError(f"cannot write the lock {path} ({err.strerror}); free space or fix the permissions "
                            "of the results folder, or use another --results") from None
        return False

    def lock_owner(self, name: str) -> str:
        """'host:pid' of the run holding the cell's lock, or '?' when unknown."""
        try:
            info = json.loads(self.lock_path(name).read_text())
            return f"{info['host']}:{info['pid']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "?"

    def _stale(self, path: Path) -> bool:
        try:
            info = json.loads(path.read_text())
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return True
        return _dead_here(info) or age > STALE_LOCK_SECONDS

    def release_dead_locks(self) -> list[str]:
        """Remove the locks of processes on this host that no longer exist (workers killed by an interrupt);
        returns the cells released."""
        released = []
        for path in sorted((self.root / "locks").glob("*.lock")):
            try:
                info = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if _dead_here(info):
                path.unlink(missing_ok=True)
                released.append(path.stem)
        return released

    def heartbeat(self, name: str) -> None:
        """Touch the lock so other runs see this cell is alive."""
        self.lock_path(name).touch(exist_ok=True)

    def unlock(self, name: str) -> None:
        """Release the cell."""
        self.lock_path(name).unlink(missing_ok=True)


def _dead_here(info: object) -> bool:
    """Whether a lock's owner was a process on this host that no longer exists."""
    return isinstance(info, dict) and info.get("host") == socket.gethostname() and not _alive(info.get("pid"))


def _alive(pid: object) -> bool:
    """Whether process `pid` exists on this host (an unreadable pid counts as alive: never release blindly)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:            # exists, owned by someone else
        pass
    return True


def has_attacks(record: dict, attacks: dict[str, list[float]]) -> bool:
    """Whether a result record holds every attack (norm and sizes, pixel units) asked for; older units never count."""
    if not attacks:
        return True
    robustness = record.get("robustness") or {}
    if robustness.get("units") != PIXEL_UNITS:
        return False
    have = robustness.get("norms", {})
    return all(set(eps) <= set(have.get(norm, {}).get("epsilons", [])) for norm, eps in attacks.items())
