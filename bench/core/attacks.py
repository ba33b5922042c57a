"""Fast gradient attacks (Goodfellow et al., 2015, and its L2 / L1 generalisation) in pixel units on the [0, 1]
scale, whatever input normalisation the dataset uses; vmap-safe (torch.func.grad).

With p the image in pixel units and x = (p - mean) / std the model's input (per channel), an attack of size
epsilon in norm q moves the pixels by epsilon * d, d the steepest-ascent direction of unit q-norm's
normalised-gradient form ("fast gradient method"), g = dL/dp = (dL/dx) / std per example:
    linf: d = sign(g)            (FGSM: every pixel moves by exactly epsilon)
    l2:   d = g / ||g||_2        (||p' - p||_2 = epsilon)
    l1:   d = g / ||g||_1        (||p' - p||_1 = epsilon)
then x' = x + epsilon * d / std, clamped to the valid pixel range [0, 1] (in model units) unless told otherwise.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.func import grad

from bench.data.pixels import PixelSpace
from bench.util.errors import UserError

NORMS = ("linf", "l2", "l1")
_TINY = 1e-12          # guards g / ||g|| where the gradient vanishes


def check_norm(norm: str) -> str:
    """The norm if it is one of NORMS, else a UserError saying which exist."""
    if norm not in NORMS:
        raise UserError(f"unknown attack norm {norm!r}; choose one of {', '.join(NORMS)}")
    return norm


def unit_direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Per example (first dim), the direction of unit `norm` along the gradient g (see the module docstring)."""
    if norm == "linf":
        return g.sign()
    dims = tuple(range(1, g.dim()))
    size = g.abs().sum(dims, keepdim=True) if norm == "l1" else g.square().sum(dims, keepdim=True).sqrt()
    return g / size.clamp_min(_TINY)


def fast_gradient(loss_of_input: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, epsilon: float,
                  norm: str = "linf", space: PixelSpace | None = None, clamp: bool = True) -> torch.Tensor:
    """x moved by epsilon (pixel units, `norm`) up the loss, clamped to the pixel range when `clamp` and known.
    The result is a constant of the parameters (adversarial training treats the attack as data)."""
    space = space or PixelSpace.identity()
    g_pixels = grad(loss_of_input)(x) / space.std            # dL/dp = dL/dx * dx/dp, dx/dp = 1 / std
    x_adv = x + epsilon * unit_direction(g_pixels, norm) / space.std
    if clamp and space.lo is not None:
        x_adv = torch.maximum(torch.minimum(x_adv, space.hi), space.lo)
    return x_adv.detach()
