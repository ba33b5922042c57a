"""Kernels where the CPU profile says the stock ones cost: softplus without log1p (the same function as F.softplus,
values, first and second derivatives, tests/test_ops.py in float64; on a GPU the stock kernel is used), and the
batch norm that is exact in each setting (elementary ops under vmap, the stock kernel outside it)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


SOFTPLUS_THRESHOLD = 20.0     # F.softplus's default: above it, softplus(x) = x and its derivative is 1


class _Softplus(torch.autograd.Function):
    """softplus(x) = relu(x) - log(sigmoid(|x|)), d/dx = sigmoid(x), both linear above F.softplus's threshold as
    the stock kernel is. The stock CPU kernel calls log1p, about 9x slower than log under this machine's AVX-512
    dispatch; the rewrite avoids it (absolute difference below one float32 ulp of 1, 2e-16 in float64). The
    backward is written in differentiable ops, so second derivatives (the MAML outer gradient) flow through it;
    vmap batches it op by op."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > SOFTPLUS_THRESHOLD, x, torch.relu(x) - torch.log(torch.sigmoid(x.abs())))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.where(x > SOFTPLUS_THRESHOLD, 1.0, torch.sigmoid(x))


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(x)): the log1p-free rewrite on the CPU, the stock kernel elsewhere."""
    return _Softplus.apply(x) if x.device.type == "cpu" else F.softplus(x)


def batch_norm(x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor | None, eps: float,
               outside_vmap: bool = False) -> torch.Tensor:
    """Transductive batch norm (the statistics of x itself) with the stock kernel where it is exact: outside vmap,
    and on the CPU under vmap with the shift only (tested in float64 against the elementary form and finite
    differences). Under vmap with a gamma, which the inner loop adapts per task, the stock kernel gives wrong
    second-order gradients (REFERENCE.md), and on a GPU under vmap it is unverified: elementary ops there. A unit
    scale stands in for a missing gamma (the stock double backward needs one)."""
    if outside_vmap or (gamma is None and x.device.type == "cpu"):
        scale = gamma if gamma is not None else torch.ones_like(beta)
        return F.batch_norm(x, None, None, scale, beta, training=True, eps=eps)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = (x - mean).square().mean(dim=(0, 2, 3), keepdim=True)
    y = (x - mean) * torch.rsqrt(var + eps)
    if gamma is not None:
        y = y * gamma.view(1, -1, 1, 1)
    return y + beta.view(1, -1, 1, 1)
