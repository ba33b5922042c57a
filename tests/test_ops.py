"""bench.ops in float64: the log1p-free softplus, the strided-comparison max pool and the stock batch norm equal
the stock kernels / the elementary batch norm in value, gradient and second derivative (also under vmap and
torch.func.grad where they are used there), with the stock pool's tie rule."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from bench.ops import batch_norm, max_pool_2x2, softplus


def _first_and_second(fn, x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().requires_grad_(True)
    y = fn(x)
    (g,) = torch.autograd.grad((y * weight).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.square().sum(), x)
    return y.detach(), g.detach(), h


def test_softplus_equals_the_stock_kernel_with_two_derivatives():
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(4000, generator=gen, dtype=torch.float64) * 8,
                   torch.tensor([-800.0, -40.0, -1e-9, 0.0, 1e-9, 25.0, 800.0], dtype=torch.float64)])
    w = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    for ours, stock in zip(_first_and_second(softplus, x, w), _first_and_second(F.softplus, x, w)):
        torch.testing.assert_close(ours, stock, rtol=1e-12, atol=1e-15)
    per_row = vmap(grad(lambda v: softplus(v).square().sum()))(x[:4000].view(40, 100))
    stock_rows = vmap(grad(lambda v: F.softplus(v).square().sum()))(x[:4000].view(40, 100))
    torch.testing.assert_close(per_row, stock_rows, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 3, 7, 7), (1, 2, 3, 5)])
def test_max_pool_equals_the_stock_kernel_with_two_derivatives(shape):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    x = torch.where(x < 0, torch.zeros(()), x.round(decimals=1))       # ReLU-like: many ties, at 0 and above
    w = torch.randn(x[..., ::2, ::2][..., : shape[2] // 2, : shape[3] // 2].shape, generator=gen, dtype=torch.float64)
    ours = _first_and_second(lambda v: max_pool_2x2(v, outside_vmap=True), x, w)
    stock = _first_and_second(lambda v: F.max_pool2d(v, 2), x, w)
    for a, b in zip(ours, stock):
        assert torch.equal(a, b)
    _, ours_idx = F.max_pool2d(x, 2, return_indices=True)
    from bench.ops import _MaxPool2x2
    assert torch.equal(_MaxPool2x2.apply(x)[1], ours_idx)


def test_stock_batch_norm_outside_vmap_equals_the_elementary_one():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 5, 4, 4, generator=gen, dtype=torch.float64)
    beta = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    gamma = torch.rand(5, generator=gen, dtype=torch.float64).add(0.5).requires_grad_(True)
    w = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    for scale in (None, gamma):
        stock = _first_and_second(lambda v: batch_norm(v, beta, scale, 1e-3, outside_vmap=True), x, w)
        elementary = _first_and_second(lambda v: batch_norm(v, beta, scale, 1e-3), x, w)
        for a, b in zip(stock, elementary):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
