"""How model inputs relate to [0, 1] pixels: the unit in which attacks are sized and inputs are clamped."""
from __future__ import annotations

from dataclasses import dataclass

import torch

PIXEL_UNITS = "pixels on the [0, 1] scale"     # the unit of every attack size (recorded with the results)


@dataclass(frozen=True)
class PixelSpace:
    """How model inputs relate to [0, 1] pixels, per channel: x = (p - mean) / std; lo, hi = x at p = 0, 1.
    Tensors shaped [C, 1, 1] (broadcast over H, W). `PixelSpace.identity()` (no data): x is p, no range."""

    std: torch.Tensor
    lo: torch.Tensor | None
    hi: torch.Tensor | None

    @staticmethod
    def identity() -> "PixelSpace":
        """Inputs taken as pixel units with no known range (learners built without data, as in tests)."""
        return PixelSpace(torch.tensor(1.0), None, None)

    def to(self, dtype: torch.dtype, device: torch.device | str) -> "PixelSpace":
        """The same space with tensors of this dtype on this device."""
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(dtype=dtype, device=device)
        return PixelSpace(move(self.std), move(self.lo), move(self.hi))
