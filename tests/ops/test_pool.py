"""The CPU pool of bench/ops/kernels.py and the pool-before-ReLU order of the backbone compute the stock function: the
same values and indices as F.max_pool2d (ties included: Omniglot's blank regions make whole windows equal), and the
same loss and meta-gradients as the stock ops on every execution path, bit for bit in float64 and float32 on the
per-task paths; with the fast batch norm too, to float64 rounding."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from bench.data.episodes import Episodes
from bench.ops import kernels as ops
from bench.ops.dispatch import KernelPlan
from bench.ops.kernels import max_pool2
from tests.meta_gradcheck import TINY, meta_gradients, tiny_learner


pytestmark = pytest.mark.usefixtures("cpu_kernels_at_every_size")

def _blank_heavy(shape: tuple[int, ...], seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Mostly-zero binary images with a few strokes, as Omniglot's: conv outputs tie across blank windows."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=gen, dtype=dtype) > 0.85).to(dtype)


def _has_tied_windows(x: torch.Tensor) -> bool:
    h, w = (x.shape[-2] // 2) * 2, (x.shape[-1] // 2) * 2
    windows = x[..., :h, :w].unflatten(-1, (w // 2, 2)).unflatten(-3, (h // 2, 2)).transpose(-3, -2).flatten(-2)
    top2 = windows.topk(2, dim=-1).values
    return bool((top2[..., 0] == top2[..., 1]).any())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [28, 7, 3])
@pytest.mark.parametrize("examples", [6, 2 * ops.ROWS + 3])          # one chunk; several and a remainder
def test_pool_values_and_indices_equal_the_stock_kernel_with_ties(dtype, size, examples):
    x = torch.randn(examples, 5, size, size, dtype=dtype)
    x[:3] = torch.round(x[:3])                                # many exact ties
    x[3, :, :2, :2] = 1.5                                     # a window of four equal values
    assert _has_tied_windows(x)
    pooled, indices = F.max_pool2d(x, 2, return_indices=True)
    ours = max_pool2(x)
    assert torch.equal(ours, pooled)
    g = torch.randn_like(pooled)
    x_ = x.clone().requires_grad_(True)
    (ours_grad,) = torch.autograd.grad(max_pool2(x_), x_, g)
    assert torch.equal(ours_grad, torch.zeros_like(x).flatten(2).scatter(2, indices.flatten(2), g.flatten(2))
                       .view_as(x))


def test_relu_after_pool_has_the_stock_value_gradient_and_double_backward():
    torch.manual_seed(0)
    y = torch.round(torch.randn(4, 3, 8, 8, dtype=torch.float64) * 2) / 2     # ties, zeros, all-negative windows
    weight = torch.randn(4, 3, 4, 4, dtype=torch.float64)

    def grads(pool_first: bool) -> tuple[torch.Tensor, ...]:
        y_ = y.clone().requires_grad_(True)
        out = F.relu(max_pool2(y_)) if pool_first else F.max_pool2d(F.relu(y_), 2)
        (g,) = torch.autograd.grad((out * out * weight).sum(), y_, create_graph=True)
        (h,) = torch.autograd.grad((g * g).sum(), y_)
        return out.detach(), g.detach(), h
    for ours, stock in zip(grads(True), grads(False)):
        assert torch.equal(ours, stock)


def test_pool_under_nested_vmap_and_grad_equals_the_stock_kernel():
    x = torch.round(torch.randn(2, 3, 4, 2, 6, 6, dtype=torch.float64))

    def loss(pool):
        return lambda t: (F.relu(pool(t)) ** 2).sum()
    ours = vmap(vmap(grad(loss(max_pool2))))(x)
    stock = vmap(vmap(grad(loss(lambda t: F.max_pool2d(t, 2)))))(x)
    assert torch.equal(ours, stock)


def _blank_episodes(dtype: torch.dtype) -> Episodes:
    y = torch.arange(TINY.ways).repeat_interleave(2).expand(2, -1)
    return Episodes(_blank_heavy((2, 6, 1, 16, 16), 0, dtype), y.clone(), _blank_heavy((2, 6, 1, 16, 16), 1, dtype),
                    y.clone())


def _gradients(regularizer: str, fast: bool, episodes: Episodes, execution: str, dtype: torch.dtype):
    learner = tiny_learner(regularizer, dtype=dtype, plan=KernelPlan(fast=fast))
    return meta_gradients(learner, episodes, execution)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("regularizer", ["none", "meta_dropout"])
def test_per_task_meta_gradients_equal_the_stock_ops_bit_for_bit_on_blank_images(regularizer, dtype, monkeypatch):
    """The per-task and reference paths, the fast pool and ReLU order against stock ops, on tie-heavy binary
    episodes; batch norm and the convolutions are the stock kernels in both and the fused first-order kernels are
    off (the fast ones sum in another order: the next test)."""
    monkeypatch.setattr(ops, "batch_norm", lambda x, scale, beta, eps: F.batch_norm(x, None, None, scale, beta,
                                                                                     training=True, eps=eps))
    monkeypatch.setattr(ops, "conv2d", lambda x, weight, bias: F.conv2d(x, weight, bias, padding=1))
    monkeypatch.setattr(ops, "fused_block_applies", lambda *args: False)
    monkeypatch.setattr(ops, "mul_softplus", lambda f, a: f * F.softplus(a))
    episodes = _blank_episodes(dtype)
    assert _has_tied_windows(F.conv2d(episodes.x_support[0], torch.ones(1, 1, 3, 3, dtype=dtype), padding=1))
    for execution in ("per_task", "reference"):
        (loss_fast, grads_fast), (loss_stock, grads_stock) = (
            _gradients(regularizer, fast, episodes, execution, dtype) for fast in (True, False))
        assert torch.equal(loss_fast, loss_stock), execution
        for name in grads_stock:
            assert torch.equal(grads_fast[name], grads_stock[name]), (execution, name)


@pytest.mark.parametrize("regularizer", ["none", "meta_dropout"])
def test_per_task_meta_gradients_with_every_fast_kernel_equal_the_stock_ops(regularizer):
    """Fast pool, ReLU order, batch norm, convolution (at every size here) and the fused first-order block against
    stock ops: equal to float64 rounding (the conv biases, cancelled by batch norm, have gradients of pure
    rounding: absolute tolerance)."""
    episodes = _blank_episodes(torch.float64)
    for execution in ("per_task", "reference"):
        (loss_fast, grads_fast), (loss_stock, grads_stock) = (
            _gradients(regularizer, fast, episodes, execution, torch.float64) for fast in (True, False))
        torch.testing.assert_close(loss_fast, loss_stock, rtol=1e-12, atol=0)
        for name, g in grads_stock.items():
            torch.testing.assert_close(grads_fast[name], g, rtol=1e-10, atol=1e-13, msg=f"{execution} {name}")


@pytest.mark.parametrize("regularizer", ["none", "meta_dropout"])
def test_vectorized_meta_gradients_equal_the_stock_ops_on_blank_images(regularizer):
    """Under vmap the stock pool's batching rule sums in another order: equal to float64 rounding (the conv biases,
    cancelled by batch norm, have gradients of pure rounding: absolute tolerance)."""
    episodes = _blank_episodes(torch.float64)
    (loss_fast, grads_fast), (loss_stock, grads_stock) = (
        _gradients(regularizer, fast, episodes, "vectorized", torch.float64) for fast in (True, False))
    torch.testing.assert_close(loss_fast, loss_stock, rtol=1e-12, atol=0)
    for name, g in grads_stock.items():
        torch.testing.assert_close(grads_fast[name], g, rtol=1e-10, atol=1e-13, msg=name)


def test_cpu_peak_memory_sees_a_block_allocated_and_freed_inside():
    """The CPU probe of bench/benchmarks/peers.py, in a fresh process as the benchmark runs it (a process that reuses
    freed heap blocks shows no growth for a block that fits in memory it already holds): a 64 MiB tensor made and
    dropped inside the block is seen."""
    script = ("import time, torch\n"
              "from bench.execution.allocator import retain_freed_memory\n"
              "from bench.benchmarks.timing import PeakMemory\n"
              "retain_freed_memory()\n"
              "with PeakMemory(torch.device('cpu')) as peak:\n"
              "    block = torch.ones(16, 1024, 1024)\n"
              "    time.sleep(0.05)\n"
              "    del block\n"
              "print(peak.bytes)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert int(out.stdout.split()[-1]) >= 60 * 2**20
