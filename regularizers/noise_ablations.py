"""Table 3's noise types (Lee et al., ICLR 2020, section 4.1, ablation): variants of Eq. 5-6 whose extra
parameters are meta-learned only, like phi."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench.core.backbone import INIT_STD, N_BLOCKS, BackboneSpec
from bench.core.regularizer import ForwardContext, Params, Regularizer, register
from regularizers.meta_dropout import MetaDropout
from regularizers.noise_convs import block_convs, block_noise, conv_on_input

SOFTPLUS_INV_ONE = math.log(math.e - 1)      # softplus(SOFTPLUS_INV_ONE) = 1
NOISE_SHAPES = ("element", "channel")


@register
class FixedGaussian(Regularizer):
    """a ~ N(0, I), f <- f * softplus(a); no parameters. The query path uses a = 0 (Eq. 4's a = mean), i.e. a
    constant factor log 2 that the following batch norm all but cancels (only its eps term sees it)."""

    name = "fixed_gaussian"
    draws_noise = True
    acts_per_example = True

    def sample_noise(self, spec: BackboneSpec, n: int, sample_shape: tuple[int, ...], generator: torch.Generator,
                     device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return block_noise(spec, n, sample_shape, generator, device, dtype)

    def mean(self, block: int, h_in: torch.Tensor, params: Params) -> torch.Tensor:
        """The mean of a^(l): zero here."""
        return torch.zeros((), dtype=h_in.dtype, device=h_in.device)

    def on_preactivation(self, block: int, h_in: torch.Tensor, f: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        a = self.mean(block, h_in, ctx.params)
        if ctx.stochastic:
            a = a + ctx.noise[f"eps{block}"]          # Eq. 5 with the table's mean
        return f * F.softplus(a)               # Eq. 6


@register
class IndependentGaussian(FixedGaussian):
    """a ~ N(mu, I) with mu^(l) a meta-learned vector per channel (input-independent), initialised at 0.
    `noise_shape`: "element" draws eps per pre-activation unit, like meta-dropout's Eq. 5, so that only the mean's
    input dependence differs; "channel" draws one eps per (example, channel), shared over space (channel-wise
    dropout)."""

    name = "independent_gaussian"
    hyper_defaults = {"noise_shape": "element"}
    test_variants = ({"noise_shape": "channel"},)

    def validate(self) -> None:
        self.require_choice("noise_shape", NOISE_SHAPES)

    def sample_noise(self, spec: BackboneSpec, n: int, sample_shape: tuple[int, ...], generator: torch.Generator,
                     device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        if self.hyper["noise_shape"] == "element":
            return super().sample_noise(spec, n, sample_shape, generator, device, dtype)
        return {f"eps{l}": torch.randn(*sample_shape, n, spec.channels, 1, 1, generator=generator, device=device,
                                       dtype=dtype) for l in range(1, N_BLOCKS + 1)}

    def init_params(self, spec: BackboneSpec, generator: torch.Generator, dtype: torch.dtype) -> tuple[Params, Params]:
        return {f"phi.mu{l}": torch.zeros(spec.channels, dtype=dtype) for l in range(1, N_BLOCKS + 1)}, {}

    def mean(self, block: int, h_in: torch.Tensor, params: Params) -> torch.Tensor:
        return params[f"phi.mu{block}"].view(-1, 1, 1)


@register
class WeightGaussian(Regularizer):
    """Fully factorized Gaussian weights w = theta + sigma * eps, eps ~ N(0, I), resampled every inner step, on
    the conv kernels and the head's weight and bias (noise on a conv bias is a per-channel shift that batch norm
    removes); sigma = softplus(rho) per weight, rho meta-learned. The query path uses the mean weights theta.

    Initial sigma: with `sigma_relative` (default) sigma_init is a fraction of the weights' init std (INIT_STD,
    also for the zero-initialised head bias), 1.0 being Gaussian dropout's noise at p = 0.5 (alpha = p / (1 - p)
    = 1: noise std equal to the weight magnitude); otherwise sigma_init is an absolute std."""

    name = "weight_gaussian"
    hyper_defaults = {"sigma_init": 1.0, "sigma_relative": True}
    draws_noise = True
    test_variants = ({"sigma_init": 1e-3, "sigma_relative": False},)

    def validate(self) -> None:
        self.require_positive("sigma_init")
        self.require_choice("sigma_relative", (True, False))

    @property
    def initial_sigma(self) -> float:
        """The std every weight's noise starts at."""
        return self.hyper["sigma_init"] * (INIT_STD if self.hyper["sigma_relative"] else 1.0)

    @staticmethod
    def weight_shapes(spec: BackboneSpec) -> dict[str, tuple[int, ...]]:
        """Shapes of the perturbed theta tensors, by name."""
        shapes: dict[str, tuple[int, ...]] = {}
        for l in range(1, N_BLOCKS + 1):
            shapes[f"conv{l}.weight"] = (spec.channels, spec.block_input_shape(l)[0], 3, 3)
        shapes["head.weight"] = (spec.ways, spec.feature_dim)
        shapes["head.bias"] = (spec.ways,)
        return shapes

    def init_params(self, spec: BackboneSpec, generator: torch.Generator, dtype: torch.dtype) -> tuple[Params, Params]:
        rho = math.log(math.expm1(self.initial_sigma))                 # softplus(rho) = initial sigma
        return {f"phi.rho.{n}": torch.full(s, rho, dtype=dtype) for n, s in self.weight_shapes(spec).items()}, {}

    def sample_noise(self, spec: BackboneSpec, n: int, sample_shape: tuple[int, ...], generator: torch.Generator,
                     device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {name: torch.randn(*sample_shape, *shape, generator=generator, device=device, dtype=dtype)
                for name, shape in self.weight_shapes(spec).items()}

    def perturb_weights(self, params: Params, ctx: ForwardContext) -> Params:
        if not ctx.stochastic:
            return params
        noisy = {n: params[n] + F.softplus(params[f"phi.rho.{n}"]) * eps for n, eps in ctx.noise.items()}
        return {**params, **noisy}


@register
class DeterministicMetaDropout(MetaDropout):
    """a = mu(h) on support and query alike (Eq. 5 with zero variance): f <- f * softplus(mu); no noise, no
    logit noise."""

    name = "deterministic_meta_dropout"
    hyper_defaults = {}
    draws_noise = False

    def on_preactivation(self, block: int, h_in: torch.Tensor, f: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return f * F.softplus(self.mu(block, h_in, ctx))


@register
class MetaDropoutLearnedVariance(MetaDropout):
    """a ~ N(mu(h), sigma(h)^2), sigma(h) = softplus(a second phi-conv on h), starting near 1 (bias
    softplus^-1(1)); the query uses a = mu. The logit noise is as in meta-dropout."""

    name = "meta_dropout_learned_variance"

    def init_params(self, spec: BackboneSpec, generator: torch.Generator, dtype: torch.dtype) -> tuple[Params, Params]:
        phi, adapted = super().init_params(spec, generator, dtype)
        return {**phi, **block_convs(spec, generator, dtype, "phi.sigma.conv", SOFTPLUS_INV_ONE)}, adapted

    def on_preactivation(self, block: int, h_in: torch.Tensor, f: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        a = self.mu(block, h_in, ctx)
        if ctx.stochastic:
            sigma = F.softplus(conv_on_input(ctx, "phi.sigma.conv", block, h_in))
            a = a + sigma * ctx.noise[f"eps{block}"]
        return f * F.softplus(a)


@register
class MetaDropoutAdditive(MetaDropout):
    """Additive meta-dropout: Eq. 5 unchanged, Eq. 6's product replaced by a sum. With `softplus` (default),
    f <- f + scale * softplus(mu(h) + eps), query f + scale * softplus(mu(h)): softplus keeps meta-dropout's
    property that mu sets the noise amount per unit (mu << 0 suppresses it). Without, the plain Gaussian
    f <- f + scale * (mu(h) + eps), query f + scale * mu(h)."""

    name = "meta_dropout_additive"
    hyper_defaults = {**MetaDropout.hyper_defaults, "scale": 0.1, "softplus": True}
    test_variants = ({"softplus": False},)

    def validate(self) -> None:
        super().validate()
        self.require_positive("scale")
        self.require_choice("softplus", (True, False))

    def on_preactivation(self, block: int, h_in: torch.Tensor, f: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        a = self.mu(block, h_in, ctx)
        if ctx.stochastic:
            a = a + ctx.noise[f"eps{block}"]
        return f + self.hyper["scale"] * (F.softplus(a) if self.hyper["softplus"] else a)
