"""The results folder: one JSON per cell (atomic), checkpoints, and per-cell locks so that several runs
can share a folder without corrupting it or doing the same cell twice."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from bench.atomic import write_text_atomic
from bench.attacks import PIXEL_UNITS

STALE_LOCK_SECONDS = 2 * 3600      # a lock untouched this long (no heartbeat) is taken over


class ResultStore:
    """results/cells/<name>.json, results/checkpoints/<name>.pt, results/locks/<name>.lock."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def result_path(self, name: str) -> Path:
        """The cell's result JSON."""
        return self.root / "cells" / f"{name}.json"

    def checkpoint_path(self, name: str) -> Path:
        """The cell's training checkpoint."""
        return self.root / "checkpoints" / f"{name}.pt"

    def lock_path(self, name: str) -> Path:
        """The cell's lock file."""
        return self.root / "locks" / f"{name}.lock"

    def read(self, name: str) -> dict | None:
        """The cell's result, or None when absent or unreadable."""
        try:
            return json.loads(self.result_path(name).read_text())
        except (OSError, ValueError):
            return None

    def write(self, name: str, result: dict) -> Path:
        """Write the cell's result atomically."""
        return write_text_atomic(self.result_path(name), json.dumps(result, indent=1))

    def is_done(self, cell: dict) -> bool:
        """Whether a result exists with every attack (norm and size, pixel units) the cell asks for."""
        result = self.read(cell["name"])
        if result is None:
            return False
        if not cell["attacks"]:
            return True
        robustness = result.get("robustness") or {}
        if robustness.get("units") != PIXEL_UNITS:           # older results: other units or format
            return False
        have = robustness.get("norms", {})
        return all(set(eps) <= set(have.get(norm, {}).get("epsilons", [])) for norm, eps in cell["attacks"].items())

    def all_results(self) -> dict[str, dict]:
        """Every readable result, by cell name."""
        folder = self.root / "cells"
        out = {}
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            result = self.read(path.stem)
            if result is not None:
                out[path.stem] = result
        return out

    def try_lock(self, name: str) -> bool:
        """Claim the cell; False if a live run holds it. Stale locks (dead process here, or no heartbeat for
        STALE_LOCK_SECONDS) are taken over."""
        path = self.lock_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale(path):
                    return False
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(owner)
            return True
        return False

    def _stale(self, path: Path) -> bool:
        try:
            info = json.loads(path.read_text())
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return True
        if info.get("host") == socket.gethostname() and not _alive(info.get("pid", -1)):
            return True
        return age > STALE_LOCK_SECONDS

    def heartbeat(self, name: str) -> None:
        """Touch the lock so other runs see this cell is alive."""
        self.lock_path(name).touch(exist_ok=True)

    def unlock(self, name: str) -> None:
        """Release the cell."""
        self.lock_path(name).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:            # exists, owned by someone else
        pass
    return True
