"""bench.ops in float64: the stock batch norm outside vmap equals the elementary one, the fast CPU batch norm, the
convolution, the fused first-order block and the product f * softplus(a) equal the stock ops, in value, gradient and
second derivative (also under vmap and torch.func.grad where they run there); batch norm and conv are taken through
the dispatch seam (bench/ops/dispatch.py) with the plan each case names."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from bench.ops import kernels as ops
from bench.ops.dispatch import KernelPlan, select_ops
from bench.ops.kernels import bn_pool_relu, max_pool2, mul_softplus


def batch_norm(x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor | None, eps: float, outside_vmap: bool = False,
               groups: int = 1, fast: bool = False) -> torch.Tensor:
    """The CPU op set's batch norm for this plan."""
    return select_ops("cpu", KernelPlan(outside_vmap, sample_groups=groups, fast=fast)).batch_norm(x, beta, gamma, eps)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, fast: bool = True) -> torch.Tensor:
    """The CPU op set's 3x3 convolution (fast: the CPU kernels)."""
    return select_ops("cpu", KernelPlan(fast=fast)).conv2d(x, weight, bias)


pytestmark = pytest.mark.usefixtures("cpu_kernels_at_every_size")

def _first_and_second(fn, x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().requires_grad_(True)
    y = fn(x)
    (g,) = torch.autograd.grad((y.square() * weight).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.square().sum(), x)
    return y.detach(), g.detach(), h


def _product_derivatives(op, f: torch.Tensor, a: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Value, first derivatives by a plain backward (the query pass's), first derivatives with a graph and the
    second derivatives through them, of sum(op(f, a)^2 * w)."""
    f, a = f.detach().requires_grad_(True), a.detach().requires_grad_(True)
    value = op(f, a)
    plain = torch.autograd.grad((value.square() * w).sum(), (f, a))
    first = torch.autograd.grad((op(f, a).square() * w).sum(), (f, a), create_graph=True)
    second = torch.autograd.grad(first[0].square().sum() + (first[1] * w).sum(), (f, a))
    return (value.detach(), *plain, *(g.detach() for g in first), *second)


@pytest.mark.parametrize("large", [True, False])
def test_mul_softplus_equals_the_stock_product_with_two_derivatives(large):
    """f * softplus(a) saving f and a only (the query path's memory): the same values, first derivatives (plain
    backward: the in-place route) and second derivatives as f * F.softplus(a) in float64, with entries above
    softplus's threshold (the `where` route) and without."""
    gen = torch.Generator().manual_seed(3)
    f = torch.randn(5, 4, 6, 6, generator=gen, dtype=torch.float64)
    a = torch.randn(5, 4, 6, 6, generator=gen, dtype=torch.float64) * 4
    if large:
        a[0, 0, :2] = torch.tensor([25.0, 800.0, -800.0, 20.5, 19.5, -40.0], dtype=torch.float64)
    w = torch.randn(f.shape, generator=gen, dtype=torch.float64)
    ours = _product_derivatives(mul_softplus, f, a, w)
    stock = _product_derivatives(lambda u, v: u * F.softplus(v), f, a, w)
    for x, y in zip(ours, stock):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-15)
    small = (f[:2, :2, :3, :3].clone().requires_grad_(True), a[:2, :2, :3, :3].clone().requires_grad_(True))
    assert torch.autograd.gradcheck(mul_softplus, small)
    assert torch.autograd.gradgradcheck(mul_softplus, small)
    broadcast = (small[0][:, :1], small[1])                    # f over a's samples: the stock composition
    assert torch.autograd.gradcheck(mul_softplus, broadcast)


def test_mul_softplus_takes_the_stock_ops_under_torch_func():
    """Under vmap (the vectorized path) the product is the stock composition: the same per-row gradients."""
    gen = torch.Generator().manual_seed(4)
    f, a = (torch.randn(3, 4, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    ours = vmap(grad(lambda u, v: mul_softplus(u, v).square().sum(), argnums=(0, 1)))(f, a)
    stock = vmap(grad(lambda u, v: (u * F.softplus(v)).square().sum(), argnums=(0, 1)))(f, a)
    for x, y in zip(ours, stock):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-15)


def test_fused_block_statistics_by_row_chunks_equal_the_batch_norms_bit_for_bit():
    """The fused block's mean and 1 / sqrt(var + eps), made ROWS examples at a time (a remainder chunk here),
    equal the whole-batch statistics of _BatchNorm bit for bit, in float32 and float64."""
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(2 * ops.ROWS + 3, 4, 6, 6, dtype=dtype) * 3 + 1
        mean, _, invstd = ops._statistics(x, 1e-3)
        chunked_mean, chunked_invstd = ops._mean_invstd(x, 1e-3)
        assert torch.equal(chunked_mean, mean) and torch.equal(chunked_invstd, invstd)


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


def test_stock_batch_norm_under_vmap_equals_the_elementary_one_for_the_shift_only():
    """The CPU path runs the stock kernel under vmap when batch norm has no gamma: first and second derivatives
    equal the elementary form's (the inner loop's gradient and the outer gradient through it)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 6, 5, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    beta = torch.randn(6, generator=gen, dtype=torch.float64)

    def inner(xx, ww, b, stock):
        return (batch_norm(xx, b, None, 1e-3, outside_vmap=stock).square() * ww).sum()

    def outer(stock):
        return vmap(grad(lambda xx, ww, b: grad(inner, argnums=2)(xx, ww, b, stock).square().sum(), argnums=(0, 2)),
                    in_dims=(0, 0, None))(x, w, beta)

    for a, b in zip(outer(True), outer(False)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fast_batch_norm_equals_the_stock_kernel_with_two_derivatives():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(6, 5, 4, 4, generator=gen, dtype=torch.float64).mul(3).add(2)
    beta = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    gamma = torch.rand(5, generator=gen, dtype=torch.float64).add(0.5).requires_grad_(True)
    w = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    for scale, groups in ((None, 1), (gamma, 1), (None, 3), (gamma, 2)):
        fast = _first_and_second(lambda v: batch_norm(v, beta, scale, 1e-3, True, groups, fast=True), x, w)
        stock = _first_and_second(lambda v: batch_norm(v, beta, scale, 1e-3, True, groups), x, w)
        for a, b in zip(fast, stock):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        params = (beta,) if scale is None else (beta, gamma)

        def parameter_derivatives(fast: bool) -> tuple[torch.Tensor, ...]:
            y = batch_norm(x, beta, scale, 1e-3, True, groups, fast=fast)
            first = torch.autograd.grad((y.square() * w).sum(), params, create_graph=True)
            return (*first, *torch.autograd.grad(sum(g.square().sum() for g in first), params))
        for a, b in zip(parameter_derivatives(True), parameter_derivatives(False)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fast_batch_norm_matches_finite_differences_to_second_order():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64).mul(2).add(1).requires_grad_(True)
    beta = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)
    gamma = torch.rand(2, generator=gen, dtype=torch.float64).add(0.5).requires_grad_(True)

    def fast(v, b, g):
        return batch_norm(v, b, g, 1e-3, True, fast=True)
    assert torch.autograd.gradcheck(fast, (x, beta, gamma))
    assert torch.autograd.gradgradcheck(fast, (x, beta, gamma))


def test_fast_batch_norm_under_vmap_and_grad_equals_the_stock_kernel():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, 6, 5, 5, generator=gen, dtype=torch.float64)
    beta = torch.randn(3, 6, generator=gen, dtype=torch.float64)

    def loss(fast: bool):
        return lambda xx, bb: (batch_norm(xx, bb, None, 1e-3, fast=fast) ** 3).sum()
    fast = vmap(grad(loss(True), argnums=(0, 1)))(x, beta)
    stock = vmap(grad(loss(False), argnums=(0, 1)))(x, beta)
    for a, b in zip(fast, stock):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fast_conv_equals_the_stock_one_with_two_derivatives():
    """bench.ops.kernels.conv2d's double backward (the weight term by the backward-weights kernel) equals the stock
    one's, for every pair of incoming gradients, and passes gradgradcheck (with and without bias, and for a
    one-channel input that needs no gradient: block 1 on images)."""
    gen = torch.Generator().manual_seed(7)
    for c_in, with_bias, input_grad in ((3, True, True), (3, False, True), (1, True, False)):
        x = torch.randn(4, c_in, 6, 6, generator=gen, dtype=torch.float64, requires_grad=input_grad)
        weight = torch.randn(5, c_in, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
        bias = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True) if with_bias else None
        inputs = tuple(t for t in (x, weight, bias) if t is not None and t.requires_grad)
        w = torch.randn(4, 5, 6, 6, generator=gen, dtype=torch.float64)

        def derivatives(conv) -> tuple[torch.Tensor, ...]:
            first = torch.autograd.grad((conv(x, weight, bias).tanh() * w).sum(), inputs, create_graph=True)
            return (*first, *torch.autograd.grad(sum((g.sin() * (i + 1)).sum() for i, g in enumerate(first)), inputs))
        assert "_Conv2d" in type(conv2d(x, weight, bias).grad_fn).__name__
        fast = derivatives(lambda *a: conv2d(*a, fast=True))
        stock = derivatives(lambda *a: F.conv2d(*a, padding=1))
        for a, b in zip(fast, stock):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

        def conv_of(*free: torch.Tensor) -> torch.Tensor:          # the inputs with gradients replaced by free
            values = iter(free)
            return conv2d(*(next(values) if t is not None and t.requires_grad else t for t in (x, weight, bias)))
        assert torch.autograd.gradgradcheck(conv_of, inputs)


def test_fast_conv_runs_the_stock_op_under_torch_func():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(3, 2, 2, 5, 5, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 2, 3, 3, generator=gen, dtype=torch.float64)

    def loss(fast: bool):
        return lambda xx, ww: conv2d(xx, ww, None, fast=fast).square().sum()
    for a, b in zip(vmap(grad(loss(True), argnums=(0, 1)), in_dims=(0, None))(x, weight),
                    vmap(grad(loss(False), argnums=(0, 1)), in_dims=(0, None))(x, weight)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def _separate_bn_pool_relu(f: torch.Tensor, beta: torch.Tensor, groups: int) -> torch.Tensor:
    return F.relu(max_pool2(batch_norm(f, beta, None, 1e-3, True, groups, fast=True)))


@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("examples", [6, 21])            # one row chunk (ops.ROWS); several and a remainder
def test_fused_bn_pool_relu_equals_the_separate_ops(size, groups, examples):
    """bench.ops.kernels.bn_pool_relu: the same values as the separate fast ops (float32, bit for bit, ties from rounded
    inputs included), the same gradients for f and beta in float64, and through create_graph the same second
    derivatives (it then runs the separate ops)."""
    gen = torch.Generator().manual_seed(9)
    f32 = torch.round(torch.randn(examples, 4, size, size, generator=gen) * 3).add(1)   # many exact ties
    beta32 = torch.randn(4, generator=gen)
    assert torch.equal(bn_pool_relu(f32, beta32, 1e-3, groups), _separate_bn_pool_relu(f32, beta32, groups))
    f = (f32.double() + torch.randn(f32.shape, generator=gen, dtype=torch.float64)).requires_grad_(True)
    beta = beta32.double().requires_grad_(True)
    w = torch.randn(examples, 4, size // 2, size // 2, generator=gen, dtype=torch.float64)

    def derivatives(block) -> tuple[torch.Tensor, ...]:
        first = torch.autograd.grad((block(f, beta, groups).square() * w).sum(), (f, beta), create_graph=True)
        second = torch.autograd.grad(first[0].square().sum() + first[1].sum(), (f, beta))
        plain = torch.autograd.grad((block(f, beta, groups).square() * w).sum(), (f, beta))
        return (*plain, *second)
    fused = derivatives(lambda *a: bn_pool_relu(a[0], a[1], 1e-3, a[2]))
    for a, b in zip(fused, derivatives(_separate_bn_pool_relu)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda v, b: bn_pool_relu(v, b, 1e-3, groups), (f, beta))


def test_small_inputs_take_the_stock_kernels(monkeypatch):
    """Below ops.FAST_MIN_POSITIONS positions per channel the stock kernels run (their fixed costs are lower);
    from it on, the CPU kernels."""
    monkeypatch.setattr(ops, "FAST_MIN_POSITIONS", 100)
    beta = torch.zeros(4, requires_grad=True)
    weight = torch.randn(4, 4, 3, 3, requires_grad=True)
    for n, fast in ((2, False), (4, True)):                       # 2 * 36 < 100 <= 4 * 36 positions
        x = torch.randn(n, 4, 6, 6, requires_grad=True)
        names = [type(t.grad_fn).__name__ for t in (conv2d(x, weight, None), batch_norm(x, beta, None, 1e-3, True,
                                                                                    fast=True), max_pool2(x))]
        assert all(name.startswith("_") == fast for name in names), (n, names)
        assert fast == ops.fused_block_applies(x, beta, None)
