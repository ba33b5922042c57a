"""The regularizer protocol: hooks the backbone and the inner loop call, and the registry that @register fills; the
core never names a regularizer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, TypeVar

import torch

from bench.data.pixels import PixelSpace
from bench.ops.dispatch import Ops
from bench.util.errors import UserError

Params = dict[str, torch.Tensor]


@dataclass
class ForwardContext:
    """One forward pass: all parameters, this pass's noise (None = deterministic path), soft targets, the operations
    to compute with (bench/ops/dispatch.py), and the extra loss terms the regularizer adds."""

    params: Params
    noise: dict[str, torch.Tensor] | None
    targets: torch.Tensor
    ops: Ops
    extra_loss: torch.Tensor | float = 0.0

    @property
    def stochastic(self) -> bool:
        """True on the support path (noise drawn, possibly none), False on the deterministic query path."""
        return self.noise is not None


class Regularizer:
    """Base class: every hook is the identity. A regularizer overrides the hooks it needs.

    Parameters it creates are either meta-only (like phi: outer loop only) or adapted (inner loop too).
    Its random numbers are drawn outside the vectorized inner loop by sample_noise, so a seed fixes them
    and the per-task reference loop sees exactly the same noise. What it needs of the forward is stated as data:
    needs_full_activation when it overrides on_activation (the ReLU output before pooling), acts_per_example when
    every hook acts on each example alone given its noise (no mixing across examples).
    """

    name: ClassVar[str] = "base"
    hyper_defaults: ClassVar[dict[str, Any]] = {}
    draws_noise: ClassVar[bool] = False             # False: deterministic, one MC sample suffices
    needs_full_activation: ClassVar[bool] = False   # True: on_activation is called (else never)
    acts_per_example: ClassVar[bool] = False        # True: every hook acts on each example alone, given its noise
    test_variants: ClassVar[tuple[dict[str, Any], ...]] = ()  # hyper settings that open other gradient paths:
    #                                                           the float64 tests check each beside the defaults
    pixels: PixelSpace = PixelSpace.identity()      # inputs vs [0, 1] pixels; bound from the data by bind_pixels

    def __init__(self, **hyper: Any):
        unknown = set(hyper) - set(self.hyper_defaults)
        if unknown:
            allowed = ", ".join(sorted(self.hyper_defaults)) or "none"
            raise UserError(f"regularizer '{self.name}' has no hyper-parameter {sorted(unknown)}; "
                            f"it takes: {allowed}")
        self.hyper = {**self.hyper_defaults, **hyper}
        self.validate()

    def validate(self) -> None:
        """Check hyper-parameter values; raise UserError with the allowed range."""

    def require_in_range(self, key: str, low: float, high: float = float("inf"), low_inclusive: bool = True) -> None:
        """Raise UserError unless hyper-parameter `key` is a number in [low, high) (or (low, high))."""
        value = self.hyper[key]
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not is_number or not (low <= value if low_inclusive else low < value) or not value < high:
            bracket = "[" if low_inclusive else "("
            raise UserError(f"regularizer '{self.name}': {key} must be a number in {bracket}{low}, {high}), "
                            f"got {value!r}")

    def require_positive(self, key: str) -> None:
        """Raise UserError unless hyper-parameter `key` is a positive number."""
        self.require_in_range(key, 0.0, low_inclusive=False)

    def require_choice(self, key: str, choices: tuple) -> None:
        """Raise UserError unless hyper-parameter `key` is one of `choices` (true / false for booleans)."""
        value = self.hyper[key]
        if not any(value == c and type(value) is type(c) for c in choices):
            allowed = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
            raise UserError(f"regularizer '{self.name}': {key} must be one of {allowed}, got {value!r}")

    def bind_pixels(self, space: PixelSpace) -> None:
        """Tell the regularizer how its inputs relate to [0, 1] pixels (attacks in pixel units)."""
        self.pixels = space

    def init_params(self, spec: Any, generator: torch.Generator, dtype: torch.dtype) -> tuple[Params, Params]:
        """(meta-only parameters, inner-loop-adapted parameters) this regularizer adds."""
        return {}, {}

    def sample_noise(self, spec: Any, n: int, sample_shape: tuple[int, ...], generator: torch.Generator,
                     device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Noise for forwards over n examples, each tensor with leading dims sample_shape."""
        return {}

    def perturb_weights(self, params: Params, ctx: ForwardContext) -> Params:
        """Weights used by this forward (weight noise)."""
        return params

    def perturb_support(self, x: torch.Tensor, support_loss: Callable[[torch.Tensor], torch.Tensor],
                        ctx: ForwardContext) -> torch.Tensor:
        """Support inputs for an inner step (adversarial examples); support_loss(x) is the current loss."""
        return x

    def on_features(self, block: int, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """The input (block 0) or block l's pooled output (mixing; may also set ctx.targets)."""
        return h

    def on_preactivation(self, block: int, h_in: torch.Tensor, f: torch.Tensor,
                         ctx: ForwardContext) -> torch.Tensor:
        """Block l's conv output f before batch norm, given the block's input h_in."""
        return f

    def on_activation(self, block: int, h_in: torch.Tensor, a: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """Block l's ReLU output before pooling, given the block's input h_in (called when needs_full_activation)."""
        return a

    def on_logits(self, features: torch.Tensor, logits: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """The logits, given the flattened final features."""
        return logits



class Wrapped(Regularizer):
    """A regularizer that forwards every hook to `inner` and states what inner states: the base of wrappers that
    observe or reshape a forward (recording features, forwarding Monte-Carlo samples as one batch)."""

    def __init__(self, inner: Regularizer):           # no hyper-parameters of its own
        self.inner, self.hyper, self.pixels = inner, inner.hyper, inner.pixels

    @property
    def name(self) -> str:                            # type: ignore[override]
        return self.inner.name

    @property
    def draws_noise(self) -> bool:                    # type: ignore[override]
        return self.inner.draws_noise

    @property
    def needs_full_activation(self) -> bool:          # type: ignore[override]
        return self.inner.needs_full_activation

    @property
    def acts_per_example(self) -> bool:               # type: ignore[override]
        return self.inner.acts_per_example

    def init_params(self, spec: Any, generator: torch.Generator, dtype: torch.dtype) -> tuple[Params, Params]:
        return self.inner.init_params(spec, generator, dtype)

    def sample_noise(self, spec: Any, n: int, sample_shape: tuple[int, ...], generator: torch.Generator,
                     device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return self.inner.sample_noise(spec, n, sample_shape, generator, device, dtype)

    def perturb_weights(self, params: Params, ctx: ForwardContext) -> Params:
        return self.inner.perturb_weights(params, ctx)

    def perturb_support(self, x: torch.Tensor, support_loss: Callable[[torch.Tensor], torch.Tensor],
                        ctx: ForwardContext) -> torch.Tensor:
        return self.inner.perturb_support(x, support_loss, ctx)

    def on_features(self, block: int, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return self.inner.on_features(block, h, ctx)

    def on_preactivation(self, block: int, h_in: torch.Tensor, f: torch.Tensor,
                         ctx: ForwardContext) -> torch.Tensor:
        return self.inner.on_preactivation(block, h_in, f, ctx)

    def on_activation(self, block: int, h_in: torch.Tensor, a: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return self.inner.on_activation(block, h_in, a, ctx)

    def on_logits(self, features: torch.Tensor, logits: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return self.inner.on_logits(features, logits, ctx)

REGISTRY: dict[str, type[Regularizer]] = {}
R = TypeVar("R", bound=type[Regularizer])


def register(cls: R) -> R:
    """Class decorator: make a regularizer selectable by its `name` (a file in regularizers/ is found on import)."""
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"{cls.__qualname__} needs a class attribute `name`, a plain identifier (e.g. name = "
                        f"'my_noise'), to be registered")
    if name in REGISTRY and REGISTRY[name] is not cls:
        taken = REGISTRY[name]
        raise TypeError(f"regularizer name '{name}' is taken by {taken.__module__}.{taken.__qualname__}")
    if "on_activation" in vars(cls) and not cls.needs_full_activation:      # the forward would never call it
        raise TypeError(f"{cls.__qualname__} overrides on_activation: set needs_full_activation = True")
    REGISTRY[name] = cls
    return cls
