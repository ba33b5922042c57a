"""Where a result came from: code version, device, library versions."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def code_version() -> str:
    """The git commit of the suite, with '+dirty' when the tree has uncommitted changes; 'unknown' without git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def device_description(device: str | torch.device) -> str:
    """'cuda:0 (NVIDIA H200)' or 'cpu (x86_64, 2 threads)'."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def environment() -> dict[str, str]:
    """Library and host versions for the result JSON."""
    return {"torch": torch.__version__, "python": platform.python_version(), "host": platform.node()}
