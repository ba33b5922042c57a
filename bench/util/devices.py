"""Which devices exist here: one check, shared by the command line and the Python API, so that a device this
machine lacks gives the same one-line error from both."""
from __future__ import annotations

import torch

from bench.util.errors import UserError


def check_device(device: str | torch.device) -> None:
    """Raise UserError unless `device` ('cpu', 'cuda', 'cuda:N') exists on this machine."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {str(device)!r}; use cpu, cuda or cuda:N") from None
    if parsed.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise UserError(f"device {str(device)!r} asked but no GPU is visible; use --device cpu "
                        "(device='cpu' in the Python API)")
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise UserError(f"device {str(device)!r} asked but only {torch.cuda.device_count()} GPU(s) are visible")
