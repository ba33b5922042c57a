"""Building blocks several families share: one conv per block on the block's input, and N(0, I) noise shaped
like every block's pre-activation."""
from __future__ import annotations

import torch

from bench.core.backbone import N_BLOCKS, BackboneSpec, conv_init
from bench.core.regularizer import ForwardContext, Params


def block_noise(spec: BackboneSpec, n: int, sample_shape: tuple[int, ...], generator: torch.Generator,
                device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """eps^(l) ~ N(0, I) with the shape of every block's pre-activation f^(l), leading dims sample_shape."""
    return {f"eps{l}": torch.randn(*sample_shape, n, *spec.preactivation_shape(l), generator=generator,
                                   device=device, dtype=dtype) for l in range(1, N_BLOCKS + 1)}


def block_convs(spec: BackboneSpec, generator: torch.Generator, dtype: torch.dtype, prefix: str,
                bias: float = 0.0) -> Params:
    """`{prefix}{l}.weight/bias`: a 3x3 conv per block shaped like theta's (release init), bias set to `bias`."""
    convs = {}
    for l in range(1, N_BLOCKS + 1):
        c_in = spec.block_input_shape(l)[0]
        convs[f"{prefix}{l}.weight"] = conv_init((spec.channels, c_in, 3, 3), generator, dtype)
        convs[f"{prefix}{l}.bias"] = torch.full((spec.channels,), bias, dtype=dtype)
    return convs


def conv_on_input(ctx: ForwardContext, prefix: str, block: int, h_in: torch.Tensor) -> torch.Tensor:
    """Block l's `{prefix}` conv applied to the block's input h^(l-1) (same padding)."""
    return ctx.ops.conv2d(h_in, ctx.params[f"{prefix}{block}.weight"], ctx.params[f"{prefix}{block}.bias"])
