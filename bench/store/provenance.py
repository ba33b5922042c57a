"""Where a result came from: code version (a commit, reachable from main, plus a hash of any uncommitted changes),
device, library versions."""
from __future__ import annotations

import hashlib
import platform
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20)


def code_version() -> str:
    """The git commit of the suite; with uncommitted changes to tracked files '+dirty.<sha256 of the diff, 12
    hex>' (two runs with the same changes carry the same version); 'unknown' without git."""
    try:
        sha = _git("rev-parse", "HEAD").stdout.strip()
        diff = _git("diff", "HEAD", "--binary").stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not sha:
        return "unknown"
    return sha + (f"+dirty.{hashlib.sha256(diff.encode()).hexdigest()[:12]}" if diff else "")


def on_main(version: str) -> bool | None:
    """Whether a code version's commit is in the history of main (or origin/main), so that anyone can check it
    out; None where git or a main branch is not there to ask."""
    commit = version.split("+", 1)[0]
    for branch in ("main", "origin/main"):
        try:
            if _git("rev-parse", "--verify", "--quiet", branch).returncode != 0:
                continue
            return _git("merge-base", "--is-ancestor", commit, branch).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return None
    return None


def device_description(device: str | torch.device) -> str:
    """'cuda:0 (NVIDIA H200)' or 'cpu (x86_64, 2 threads)'."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def environment() -> dict[str, str]:
    """Library and host versions for the result JSON."""
    return {"torch": torch.__version__, "python": platform.python_version(), "host": platform.node()}
