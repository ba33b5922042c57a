"""Kernels where the CPU profile says the stock ones cost: softplus without log1p (the same function as F.softplus,
values, first and second derivatives, tests/test_ops.py in float64; on a GPU the stock kernel is used), the 2x2
max pool by the channels-last kernel (the same values and indices, tests/test_pool_first.py), and the batch norm
that is exact in each setting (elementary ops under vmap, the stock kernel outside it, per group of samples), on
the CPU with faster statistics than the stock kernel's (the same function and derivatives, tests/test_ops.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


SOFTPLUS_THRESHOLD = 20.0     # F.softplus's default: above it, softplus(x) = x and its derivative is 1


class _Softplus(torch.autograd.Function):
    """softplus(x) = log(exp(x) + 1), d/dx = sigmoid(x), both linear above F.softplus's threshold as the stock
    kernel is. The stock CPU kernel calls log1p, about 9x slower than log under this machine's AVX-512 dispatch;
    the rewrite avoids it (absolute difference below one float32 ulp of 1; tests/test_ops.py: rtol 1e-12 in
    float64) in four passes, two of them in place. The backward is written in differentiable ops, so second
    derivatives (the MAML outer gradient) flow through it; vmap batches it op by op."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        z = torch.exp(x).add_(1.0).log_()                   # inf above log(max float): replaced below
        return torch.where(x > SOFTPLUS_THRESHOLD, x, z)

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


class _MaxPool2(torch.autograd.Function):
    """F.max_pool2d(x, 2) on an NCHW tensor: the forward by the channels-last kernel (about 12x faster on the CPU than
    the NCHW one; the same values and the same indices, the first maximum of each window), the backward by the stock
    kernel with those indices. The backward is differentiable in the gradient only (the stock double backward also
    materializes zeros for the input)."""

    @staticmethod
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, indices = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2, return_indices=True)
        return pooled.contiguous(), indices.contiguous()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(output[1])
        ctx.input_shape = inputs[0].shape
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def vmap(info, in_dims: tuple, x: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[int, int]]:
        x = x.movedim(in_dims[0], 0)                     # the vmapped dim joins the batch: one kernel call
        pooled, indices = _MaxPool2.apply(x.flatten(0, 1))
        return (pooled.unflatten(0, x.shape[:2]), indices.unflatten(0, x.shape[:2])), (0, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _) -> torch.Tensor:
        (indices,) = ctx.saved_tensors
        like_input = grad.new_empty(()).expand(ctx.input_shape)      # sizes only: the kernel reads no values
        return torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), like_input, [2, 2], [2, 2],
                                                               [0, 0], [1, 1], False, indices)


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max pool with stride 2, as F.max_pool2d(x, 2): the channels-last forward on the CPU, stock elsewhere."""
    return _MaxPool2.apply(x)[0] if x.device.type == "cpu" else F.max_pool2d(x, 2)


class _BatchNorm(torch.autograd.Function):
    """Training-mode F.batch_norm(x, None, None, weight, beta, eps) on the CPU: the statistics by reductions over
    contiguous rows (the stock kernel's statistics pass is about 3x slower here), the backward by the stock backward
    kernel given those statistics, whose own derivative gives the double backward (tests/test_ops.py: values, first
    and second derivatives equal the stock ones in float64, also under vmap)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, beta: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = x.shape[1]
        count = x.numel() // c
        mean = x.flatten(2).sum(2).sum(0) / count
        centered = x - mean.view(c, 1, 1)
        var = torch.linalg.vector_norm(centered.flatten(2), dim=2).square().sum(0) / count   # biased, two-pass
        invstd = (var + eps).rsqrt()
        return centered.mul_((invstd * weight).view(c, 1, 1)).add_(beta.view(c, 1, 1)), mean, invstd

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, _, ctx.eps = inputs
        ctx.save_for_backward(x, weight, *output[1:])
        ctx.mark_non_differentiable(*output[1:])

    @staticmethod
    def backward(ctx, grad: torch.Tensor, *_) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors      # statistics as constants: the kernel's double backward
        return (*torch.ops.aten.native_batch_norm_backward(  # differentiates them through x, as the stock one's
            grad, x, weight, None, None, mean.detach(), invstd.detach(), True, ctx.eps, list(ctx.needs_input_grad[:3])),
            None)


def batch_norm(x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor | None, eps: float,
               outside_vmap: bool = False, groups: int = 1, fast: bool = False) -> torch.Tensor:
    """Transductive batch norm (the statistics of x itself) with the stock kernel where it is exact: outside vmap,
    and on the CPU under vmap with the shift only (tested in float64 against the elementary form and finite
    differences). Under vmap with a gamma, which the inner loop adapts per task, the stock kernel gives wrong
    second-order gradients (REFERENCE.md), and on a GPU under vmap it is unverified: elementary ops there. A unit
    scale stands in for a missing gamma (the stock double backward needs one). groups > 1: the batch interleaves that
    many groups (Monte-Carlo samples; row i * groups + g is example i of group g), each normalized by its own
    statistics. fast: on the CPU, _BatchNorm where the stock kernel would run."""
    if groups > 1:                      # a view [n, G * C, H, W]: one channel per (group, channel)
        y = batch_norm(x.view(-1, groups * x.shape[1], *x.shape[2:]), beta.repeat(groups),
                       None if gamma is None else gamma.repeat(groups), eps, outside_vmap, fast=fast)
        return y.view(x.shape)
    if outside_vmap or (gamma is None and x.device.type == "cpu"):
        scale = gamma if gamma is not None else torch.ones_like(beta)
        if fast and x.device.type == "cpu":
            return _BatchNorm.apply(x.contiguous(), scale, beta, eps)[0]
        return F.batch_norm(x, None, None, scale, beta, training=True, eps=eps)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = (x - mean).square().mean(dim=(0, 2, 3), keepdim=True)
    y = (x - mean) * torch.rsqrt(var + eps)
    if gamma is not None:
        y = y * gamma.view(1, -1, 1, 1)
    return y + beta.view(1, -1, 1, 1)
