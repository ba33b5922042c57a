"""Adversarial inner steps (Figure 5's baselines): every inner step trains on fast-gradient examples of the support
set (Goodfellow et al., 2015; L2 / L1 as the normalised-gradient generalisation, bench/core/attacks.py), computed
against the current inner parameters, in pixel units on the [0, 1] scale."""
from __future__ import annotations

from typing import Callable

import torch

from bench.core.attacks import NORMS, fast_gradient
from bench.core.regularizer import ForwardContext, Regularizer, register


@register
class FGSM(Regularizer):
    """x <- x + epsilon * d(grad_x L(x; theta_k)) on the support set at each step k, d the unit direction of `norm`
    in pixel units (linf: sign); clamped to the pixel range like the meta-test attack unless `clamp` is false.
    The query set is clean; the attack is a constant of the parameters. Draws no random numbers."""

    name = "fgsm"
    hyper_defaults = {"epsilon": 0.1, "norm": "linf", "clamp": True}

    def validate(self) -> None:
        self.require_in_range("epsilon", 0.0)
        self.require_choice("norm", NORMS)
        self.require_choice("clamp", (True, False))

    def perturb_support(self, x: torch.Tensor, support_loss: Callable[[torch.Tensor], torch.Tensor],
                        ctx: ForwardContext) -> torch.Tensor:
        h = self.hyper
        return fast_gradient(support_loss, x, h["epsilon"], h["norm"], self.pixels, h["clamp"])
