"""Adversarial inner steps (Figure 5's baselines): every inner step trains on FGSM examples of the support set
(Goodfellow et al., 2015), computed against the current inner parameters."""
from __future__ import annotations

from typing import Callable

import torch

from bench.attacks import fgsm
from bench.hooks import ForwardContext, Regularizer


class FGSM(Regularizer):
    """x <- x + epsilon * sign(grad_x L(x; theta_k)) on the support set at each step k; the query set is clean.
    No clamping to the pixel range (the regularizer does not know it). Draws no random numbers."""

    name = "fgsm"
    hyper_defaults = {"epsilon": 0.1}

    def validate(self) -> None:
        self.require_in_range("epsilon", 0.0)

    def perturb_support(self, x: torch.Tensor, support_loss: Callable[[torch.Tensor], torch.Tensor],
                        ctx: ForwardContext) -> torch.Tensor:
        return fgsm(support_loss, x, self.hyper["epsilon"])
