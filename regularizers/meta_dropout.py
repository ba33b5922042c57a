"""Meta-dropout (Lee et al., ICLR 2020, Eq. 5-6): learned input-dependent multiplicative noise on every block,
plus the release's additive noise on the logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.core.backbone import BackboneSpec
from bench.core.regularizer import ForwardContext, Params, Regularizer, register
from regularizers.noise_convs import block_convs, block_noise, conv_on_input


@register
class MetaDropout(Regularizer):
    """Per block l, a phi-conv on the block input h^(l-1) gives mu^(l); f^(l) <- f^(l) * softplus(mu + eps).

    The query path (and every forward without noise) uses softplus(mu). With `logit_noise`, logits are
    sampled from N(W x + b, softplus(x . w_phi + b_phi)^2), one sigma per example (the release).
    phi is meta-only: never adapted in the inner loop.
    """

    name = "meta_dropout"
    hyper_defaults = {"logit_noise": True}
    draws_noise = True
    acts_per_example = True        # Eq. 5-6 and the logit noise act on each example alone

    @property
    def logit_noise(self) -> bool:
        """Whether the logits get the release's additive noise (variants without the switch get none)."""
        return bool(self.hyper.get("logit_noise", False))

    def validate(self) -> None:
        if "logit_noise" in self.hyper:
            self.require_choice("logit_noise", (True, False))

    def init_params(self, spec: BackboneSpec, generator: torch.Generator, dtype: torch.dtype) -> tuple[Params, Params]:
        phi = block_convs(spec, generator, dtype, "phi.conv")
        if self.logit_noise:
            w = torch.empty(spec.feature_dim, dtype=dtype)
            torch.nn.init.normal_(w, std=0.02, generator=generator)
            phi["phi.head.weight"] = w
            phi["phi.head.bias"] = torch.zeros(1, dtype=dtype)
        return phi, {}

    def sample_noise(self, spec: BackboneSpec, n: int, sample_shape: tuple[int, ...], generator: torch.Generator,
                     device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        noise = block_noise(spec, n, sample_shape, generator, device, dtype)
        if self.logit_noise:
            noise["eps_logits"] = torch.randn(*sample_shape, n, spec.ways, generator=generator, device=device,
                                              dtype=dtype)
        return noise

    def mu(self, block: int, h_in: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """mu^(l)(h^(l-1)): the phi-conv on the block's input (Eq. 5)."""
        return conv_on_input(ctx, "phi.conv", block, h_in)

    def on_preactivation(self, block: int, h_in: torch.Tensor, f: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        a = self.mu(block, h_in, ctx)                 # the query path: a = mu (Eq. 4's mean)
        if ctx.stochastic:
            a = a + ctx.noise[f"eps{block}"]          # Eq. 5: a ~ N(mu, I)
        return ctx.ops.mul_softplus(f, a)            # Eq. 6: f o softplus(a)

    def on_logits(self, features: torch.Tensor, logits: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if not (ctx.stochastic and self.logit_noise):
            return logits
        sigma = F.softplus(features @ ctx.params["phi.head.weight"] + ctx.params["phi.head.bias"])
        return logits + sigma.unsqueeze(-1) * ctx.noise["eps_logits"]
