"""FGSM (Goodfellow et al., 2015): one signed-gradient step on the input; vmap-safe (torch.func.grad)."""
from __future__ import annotations

from typing import Callable

import torch
from torch.func import grad


def fgsm(loss_of_input: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, epsilon: float,
         lo: torch.Tensor | None = None, hi: torch.Tensor | None = None) -> torch.Tensor:
    """x + epsilon * sign(d loss / d x), clamped to [lo, hi] where given; a constant of the parameters."""
    direction = grad(loss_of_input)(x).sign()               # sign' = 0: no gradient flows to the parameters
    x_adv = x + epsilon * direction
    if lo is not None or hi is not None:
        x_adv = torch.clamp(x_adv, min=lo, max=hi)
    return x_adv.detach()
