"""Input & manifold mixup (Zhang et al., 2017; Verma et al., 2019) on the support set of every inner step."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.core.backbone import N_BLOCKS, BackboneSpec
from bench.core.regularizer import ForwardContext, Regularizer, register

MIX_LAYERS = N_BLOCKS + 1          # the input (0) and the pooled outputs of blocks 1..4


def beta_draws(gamma: float, shape: tuple[int, ...], generator: torch.Generator, device: torch.device,
               dtype: torch.dtype) -> torch.Tensor:
    """lambda ~ Beta(gamma, gamma), the first coordinate of a Dirichlet(gamma, gamma) draw: torch's sampler on the
    device with the regularizer's generator (no host synchronisation: safe inside a CUDA graph)."""
    concentration = torch.full((*shape, 2), float(gamma), device=device, dtype=dtype)
    return torch._sample_dirichlet(concentration, generator=generator)[..., 0]


@register
class Mixup(Regularizer):
    """Per sample: a layer k uniform in {input, block 1..4 outputs}, a permutation pi of the support examples and
    lambda ~ Beta(gamma, gamma); h_k <- lambda h_k + (1 - lambda) h_k[pi], y <- lambda y + (1 - lambda) y[pi]
    (soft labels). The query path is the identity. No parameters."""

    name = "mixup"
    hyper_defaults = {"gamma": 1.0}
    draws_noise = True

    def validate(self) -> None:
        self.require_positive("gamma")

    def sample_noise(self, spec: BackboneSpec, n: int, sample_shape: tuple[int, ...], generator: torch.Generator,
                     device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        layer = torch.randint(0, MIX_LAYERS, sample_shape, generator=generator, device=device)
        perm = torch.rand(*sample_shape, n, generator=generator, device=device).argsort(-1)
        lam = beta_draws(self.hyper["gamma"], sample_shape, generator, device, dtype)
        return {"layer": F.one_hot(layer, MIX_LAYERS).to(dtype), "perm": perm, "lam": lam}

    def on_features(self, block: int, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if not ctx.stochastic:
            return h
        perm, lam = ctx.noise["perm"], ctx.noise["lam"]
        if block == 0:                                       # exactly one layer mixes: mix the labels once
            ctx.targets = ctx.targets + (1 - lam) * (ctx.targets[perm] - ctx.targets)
        weight = ctx.noise["layer"][block] * (1 - lam)       # 0 off the chosen layer: h unchanged
        return h + weight * (h[perm] - h)
