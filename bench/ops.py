"""Elementwise and pooling kernels where the CPU profile says the stock ones cost: the same functions as
F.softplus and F.max_pool2d(x, 2) (values, first and second derivatives; tests/test_ops.py in float64), faster on
the CPU. On a GPU the stock kernels are used."""
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


class _MaxPool2x2(torch.autograd.Function):
    """F.max_pool2d(x, 2) for NCHW input outside vmap: the window maximum from three strided comparisons (the
    stock CPU kernel is ~30x slower here), with the stock kernel's tie rule (the first maximum in row-major
    order, NaN wins) and its indices, so the stock backward (and its derivative) applies unchanged."""

    @staticmethod
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h2, w2 = x.shape[-2] // 2, x.shape[-1] // 2
        m, idx = x[..., 0:2 * h2:2, 0:2 * w2:2], torch.zeros((), dtype=torch.long, device=x.device)
        for code, (di, dj) in enumerate(((0, 1), (1, 0), (1, 1)), start=1):
            candidate = x[..., di:2 * h2:2, dj:2 * w2:2]
            wins = (candidate > m) | candidate.isnan()
            m, idx = torch.where(wins, candidate, m), torch.where(wins, code, idx)
        rows = 2 * torch.arange(h2, device=x.device).view(-1, 1) + idx // 2
        cols = 2 * torch.arange(w2, device=x.device).view(1, -1) + idx % 2
        return m, rows * x.shape[-1] + cols

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0], output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        x, indices = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False,
                                                               indices)


def max_pool_2x2(x: torch.Tensor, outside_vmap: bool = False) -> torch.Tensor:
    """2x2 max pooling, stride 2; the strided-comparison kernel on the CPU when the caller is outside vmap."""
    if outside_vmap and x.device.type == "cpu":
        return _MaxPool2x2.apply(x)[0]
    return F.max_pool2d(x, 2)


def batch_norm(x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor | None, eps: float,
               outside_vmap: bool = False) -> torch.Tensor:
    """Transductive batch norm (the statistics of x itself). Under vmap it is written from elementary ops: the
    stock kernel gives wrong second-order gradients there (REFERENCE.md); outside vmap the stock kernel is exact
    (a unit scale stands in for a missing gamma: its double backward needs one) and several times cheaper."""
    if outside_vmap:
        scale = gamma if gamma is not None else torch.ones_like(beta)
        return F.batch_norm(x, None, None, scale, beta, training=True, eps=eps)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = (x - mean).square().mean(dim=(0, 2, 3), keepdim=True)
    y = (x - mean) * torch.rsqrt(var + eps)
    if gamma is not None:
        y = y * gamma.view(1, -1, 1, 1)
    return y + beta.view(1, -1, 1, 1)
