"""Which devices exist here (one check, shared by the command line and the Python API, so that a device this
machine lacks gives the same one-line error from both), torch's intra-op threads, and the precision settings a run
records."""
from __future__ import annotations

import contextlib
from typing import Iterator

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


@contextlib.contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def precision_settings() -> dict:
    """The TF32 flags in effect (legacy allow_tf32 and, where present, fp32_precision) and cudnn.benchmark."""
    out = {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
           "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
           "float32_matmul_precision": torch.get_float32_matmul_precision(),
           "cudnn.benchmark": torch.backends.cudnn.benchmark}
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        out["cudnn.conv.fp32_precision"] = conv.fp32_precision
    return out
