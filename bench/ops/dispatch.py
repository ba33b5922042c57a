"""The one seam between the model and its kernels: a forward calls the operations of an `Ops` set, and select_ops
picks that set from the device and a KernelPlan, the facts about the forward that decide which kernels are exact and
which pay. Every set computes the same function; the stock set (plan.fast False, or any device but the CPU) is
PyTorch's own operators, the fast CPU set adds bench/ops/kernels.py where they apply."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.ops import kernels


@dataclass(frozen=True)
class KernelPlan:
    """Facts about one forward that decide its kernels, not what it computes.

    outside_vmap: not under torch.func transforms, so the stock batch-norm kernel is exact (under vmap it gives
    wrong second-order gradients with an adapted gamma). first_order: its backward is never differentiated again
    (a query pass, the meta-test's inner loop), so the fused first-order kernels may run. sample_groups: the batch
    interleaves that many Monte-Carlo samples of each example (row i * groups + g), each normalized by its own
    batch statistics. fast: the CPU kernels where they apply; False gives the stock set (for comparisons)."""

    outside_vmap: bool = False
    first_order: bool = False
    sample_groups: int = 1
    fast: bool = True


class Ops:
    """The operations conv4 and the regularizers call, for one device and plan (select_ops builds it)."""

    def __init__(self, on_cpu: bool, plan: KernelPlan):
        self.plan = plan
        self.on_cpu = on_cpu
        self.cpu_kernels = on_cpu and plan.fast     # bench/ops/kernels.py where they apply

    def conv2d(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """3x3 convolution, stride 1, same padding, on [N, C, H, W] (or [n, m, C, H, W]: the first two as one batch)."""
        if x.dim() == 5:
            return self.conv2d(x.flatten(0, 1), weight, bias).unflatten(0, x.shape[:2])
        return kernels.conv2d(x, weight, bias) if self.cpu_kernels else F.conv2d(x, weight, bias, padding=1)

    def batch_norm(self, x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor | None, eps: float) -> torch.Tensor:
        """Transductive batch norm (the statistics of x itself; per group of samples with plan.sample_groups > 1).

        The stock kernel where it is exact: outside vmap, and on the CPU under vmap with the shift only (tested in
        float64 against the elementary form and finite differences); elementary ops otherwise (REFERENCE.md: the
        stock kernel under vmap with an adapted gamma gives wrong second-order gradients; on a GPU under vmap it is
        unverified). A unit scale stands in for a missing gamma (the stock double backward needs one)."""
        groups = self.plan.sample_groups
        if groups > 1:                      # a view [n, G * C, H, W]: one channel per (group, channel)
            grouped = self._batch_norm(x.view(-1, groups * x.shape[1], *x.shape[2:]), beta.repeat(groups),
                                       None if gamma is None else gamma.repeat(groups), eps)
            return grouped.view(x.shape)
        return self._batch_norm(x, beta, gamma, eps)

    def _batch_norm(self, x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor | None, eps: float) -> torch.Tensor:
        if self.plan.outside_vmap or (gamma is None and self.on_cpu):
            scale = gamma if gamma is not None else torch.ones_like(beta)
            if self.cpu_kernels:
                return kernels.batch_norm(x, scale, beta, eps)
            return F.batch_norm(x, None, None, scale, beta, training=True, eps=eps)
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = (x - mean).square().mean(dim=(0, 2, 3), keepdim=True)
        y = (x - mean) * torch.rsqrt(var + eps)
        if gamma is not None:
            y = y * gamma.view(1, -1, 1, 1)
        return y + beta.view(1, -1, 1, 1)

    def norm_relu_pool(self, f: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor | None,
                       eps: float) -> torch.Tensor:
        """max_pool2d(relu(batch_norm(f)), 2): the end of a conv block. The CPU set pools before the ReLU (the same
        values and gradients: tests/ops/test_pool.py), on a quarter of the data, and fuses the three for a
        first-order backward."""
        if not self.cpu_kernels:
            return F.max_pool2d(F.relu(self.batch_norm(f, beta, gamma, eps)), 2)
        if self.plan.first_order and kernels.fused_block_applies(f, beta, gamma):
            return kernels.bn_pool_relu(f, beta, eps, self.plan.sample_groups)
        return F.relu(kernels.max_pool2(self.batch_norm(f, beta, gamma, eps)))

    def mul_softplus(self, f: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """f * softplus(a) (Eq. 6); for a first-order backward on the CPU, the product that saves f and a only."""
        if self.cpu_kernels and self.plan.first_order:
            return kernels.mul_softplus(f, a)
        return f * F.softplus(a)


def select_ops(device: torch.device | str, plan: KernelPlan = KernelPlan()) -> Ops:
    """The op set for a forward on `device` with these facts: the CPU kernels on the CPU, stock elsewhere."""
    return Ops(torch.device(device).type == "cpu", plan)


STOCK = Ops(on_cpu=False, plan=KernelPlan(fast=False))     # PyTorch's operators, elementary batch norm under vmap


def vmap_over_tasks_pays(device: torch.device | str) -> bool:
    """Whether one vmapped meta-gradient over a meta-batch's tasks is faster than a backward per task: on a GPU,
    yes (the per-task loop leaves it idle); on the CPU, no (docs/speed.md)."""
    return torch.device(device).type == "cuda"
