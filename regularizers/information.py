"""Information-theoretic regularizers of Table 2: VIB (Alemi et al., 2017; additive) and Information Dropout,
ReLU version (Achille & Soatto, 2018; multiplicative). Both perturb every block's ReLU output with noise whose
scale a conv on the block's input predicts, and add beta * KL to the inner loss. Their convs are meta-learned
and adapted in the inner loop (section 4.1)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench.core.backbone import BackboneSpec
from bench.core.regularizer import ForwardContext, Params, Regularizer, register
from regularizers.noise_convs import block_convs, block_noise, conv_on_input


class InformationRegularizer(Regularizer):
    """Shared plumbing: the per-block noise conv rho^(l)(h^(l-1)), eps ~ N(0, I) per ReLU unit, and
    extra_loss += beta * KL (summed over units, averaged over examples). The query path is the identity."""

    hyper_defaults = {"beta": 1e-4}
    draws_noise = True
    needs_full_activation = True       # the noise acts on the ReLU output before pooling
    prefix = "info"

    def validate(self) -> None:
        self.require_in_range("beta", 0.0)

    def init_params(self, spec: BackboneSpec, generator: torch.Generator, dtype: torch.dtype) -> tuple[Params, Params]:
        return {}, block_convs(spec, generator, dtype, f"{self.prefix}.conv")

    def sample_noise(self, spec: BackboneSpec, n: int, sample_shape: tuple[int, ...], generator: torch.Generator,
                     device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return block_noise(spec, n, sample_shape, generator, device, dtype)

    def perturb(self, a: torch.Tensor, rho: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy activation, KL per unit) from the ReLU output a and the noise conv's output rho."""
        raise NotImplementedError

    def on_activation(self, block: int, h_in: torch.Tensor, a: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if not ctx.stochastic:
            return a
        rho = conv_on_input(ctx, f"{self.prefix}.conv", block, h_in)
        z, kl = self.perturb(a, rho, ctx.noise[f"eps{block}"])
        ctx.extra_loss = ctx.extra_loss + self.hyper["beta"] * kl.flatten(1).sum(1).mean()
        return z


@register
class VIB(InformationRegularizer):
    """z = a + sigma(h) * eps, sigma = softplus(rho(h)); KL(N(a, sigma^2) || N(0, I)) =
    (a^2 + sigma^2 - 1 - log sigma^2) / 2 per unit (Alemi et al., 2017, Eq. 13's KL)."""

    name = "vib"
    prefix = "vib"

    def perturb(self, a: torch.Tensor, rho: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = F.softplus(rho)
        kl = 0.5 * (a.square() + sigma.square() - 1 - 2 * torch.log(sigma))
        return a + sigma * eps, kl


@register
class InformationDropout(InformationRegularizer):
    """z = a * exp(alpha(h) * eps), alpha = alpha_max * sigmoid(rho(h)) (log-normal noise, ReLU version);
    KL to the log-uniform prior = -log alpha per unit up to a constant, nonnegative as alpha_max < 1
    (Achille & Soatto, 2018, Prop. 6)."""

    name = "information_dropout"
    hyper_defaults = {"beta": 1e-4, "alpha_max": 0.7}

    def validate(self) -> None:
        super().validate()
        self.require_in_range("alpha_max", 0.0, 1.0, low_inclusive=False)

    def perturb(self, a: torch.Tensor, rho: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # log sigmoid(rho) written as -softplus(-rho): F.logsigmoid's batching rule fails under nested vmap on CUDA
        # ("SmallVector unable to grow", torch 2.11, H100), so tests/execution/test_cuda_graph.py failed on this line
        log_alpha = -F.softplus(-rho) + math.log(self.hyper["alpha_max"])
        return a * torch.exp(log_alpha.exp() * eps), -log_alpha
