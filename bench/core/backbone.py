"""conv4 as a pure function of a parameter dict, with the regularizer's hooks at every block (Eq. 5-6 enter
through on_preactivation)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.core.regularizer import ForwardContext, Regularizer

N_BLOCKS = 4
INIT_STD = 0.02          # the release's init std of the conv (truncated at 2 std) and linear weights


@dataclass(frozen=True)
class BackboneSpec:
    """Shape of conv4: input channels and size, conv width, number of ways, batch-norm mode."""

    in_channels: int
    image_size: int
    channels: int
    ways: int
    bn_mode: str = "shift"       # "shift": beta only, meta-learned (release); "affine": gamma + beta, adapted
    bn_eps: float = 1e-3         # tf.contrib.layers.batch_norm default, as in the release

    def block_input_shape(self, block: int) -> tuple[int, int, int]:
        """(C, H, W) of the input of block 1..4 (each block halves H and W by its pool)."""
        size = self.image_size // 2 ** (block - 1)
        return (self.in_channels if block == 1 else self.channels, size, size)

    def preactivation_shape(self, block: int) -> tuple[int, int, int]:
        """(C, H, W) of block l's conv output f (same padding keeps H, W)."""
        _, h, w = self.block_input_shape(block)
        return (self.channels, h, w)

    def feature_shape(self, block: int) -> tuple[int, int, int]:
        """(C, H, W) after block l's 2x2 max pool; block 0 is the input image."""
        size = self.image_size // 2 ** block
        return (self.in_channels if block == 0 else self.channels, size, size)

    @property
    def feature_dim(self) -> int:
        """Length of the flattened final features (the head's input)."""
        c, h, w = self.feature_shape(N_BLOCKS)
        return c * h * w


def conv_init(shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Truncated normal, std 0.02, cut at two std (tf.truncated_normal_initializer)."""
    w = torch.empty(shape, dtype=dtype)
    torch.nn.init.trunc_normal_(w, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD, generator=generator)
    return w


def init_backbone(spec: BackboneSpec, generator: torch.Generator,
                  dtype: torch.dtype = torch.float32) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The release's initialisation; returns (adapted theta, meta-only parameters) by the batch-norm mode."""
    adapted, meta_only = {}, {}
    for l in range(1, N_BLOCKS + 1):
        c_in = spec.block_input_shape(l)[0]
        adapted[f"conv{l}.weight"] = conv_init((spec.channels, c_in, 3, 3), generator, dtype)
        adapted[f"conv{l}.bias"] = torch.zeros(spec.channels, dtype=dtype)
        bn_target = adapted if spec.bn_mode == "affine" else meta_only
        bn_target[f"bn{l}.beta"] = torch.zeros(spec.channels, dtype=dtype)
        if spec.bn_mode == "affine":
            adapted[f"bn{l}.gamma"] = torch.ones(spec.channels, dtype=dtype)
    head = torch.empty(spec.ways, spec.feature_dim, dtype=dtype)
    torch.nn.init.normal_(head, std=INIT_STD, generator=generator)
    adapted["head.weight"] = head
    adapted["head.bias"] = torch.zeros(spec.ways, dtype=dtype)
    return adapted, meta_only


def forward(spec: BackboneSpec, params: dict[str, torch.Tensor], x: torch.Tensor, reg: Regularizer,
            ctx: ForwardContext) -> torch.Tensor:
    """Logits of conv4 on x [n, C, H, W]; the regularizer perturbs weights, features and logits via ctx, and
    ctx.ops computes (bench/ops/dispatch.py)."""
    ops = ctx.ops
    params = reg.perturb_weights(params, ctx)
    h = reg.on_features(0, x, ctx)
    for l in range(1, N_BLOCKS + 1):
        f = ops.conv2d(h, params[f"conv{l}.weight"], params[f"conv{l}.bias"])
        f = reg.on_preactivation(l, h, f, ctx)            # Eq. 6 for meta-dropout: f * softplus(a)
        beta, gamma = params[f"bn{l}.beta"], params.get(f"bn{l}.gamma")
        if reg.needs_full_activation:
            a = F.relu(ops.batch_norm(f, beta, gamma, spec.bn_eps))
            pooled = F.max_pool2d(reg.on_activation(l, h, a, ctx), 2)
        else:
            pooled = ops.norm_relu_pool(f, beta, gamma, spec.bn_eps)
        h = reg.on_features(l, pooled, ctx)
    features = h.flatten(1)
    logits = F.linear(features, params["head.weight"], params["head.bias"])
    return reg.on_logits(features, logits, ctx)
