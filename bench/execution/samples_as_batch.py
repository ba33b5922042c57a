"""The meta-test's inner loop on the CPU with the S Monte-Carlo samples of a task as one batch of S * n examples
(Algorithm 2, lines 5-8): each sample keeps its own transductive batch-norm statistics, and one backward of the
S-sample mean loss gives the mean of the S gradients, with no vmap and no per-sample weight gradients. For
regularizers whose hooks act on each example alone (Regularizer.acts_per_example); the same adaptation as the
vectorized path up to summation order (tests/execution/test_samples_as_batch.py, float64)."""
from __future__ import annotations

from dataclasses import replace
from functools import partial

import torch

from bench.core.backbone import BackboneSpec
from bench.core.inner_loop import chunked_sample_mean, step_parameters, support_loss
from bench.core.noise import EpisodeNoise
from bench.core.regularizer import ForwardContext, Params, Regularizer, Wrapped
from bench.ops.dispatch import KernelPlan, select_ops


class SampleGroups(Wrapped):
    """A per-example regularizer on a batch whose rows i * groups + s are example i in sample s: the block input
    stays [n, 1, ...] up to block 1's hook (its convs see each example once), which sees every noise tensor as
    [n, groups, ...] (its elementwise ops broadcast over the samples) and returns [n * groups, ...]."""

    def __init__(self, inner: Regularizer, groups: int):
        super().__init__(inner)
        self.groups = groups

    def on_features(self, block: int, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        h = self.inner.on_features(block, h, ctx)
        return h.unsqueeze(1) if block == 0 else h        # [n, 1, C, H, W]: the samples share block 1's input

    def on_preactivation(self, block: int, h_in: torch.Tensor, f: torch.Tensor,
                         ctx: ForwardContext) -> torch.Tensor:
        if block != 1:
            return self.inner.on_preactivation(block, h_in, f, ctx)
        flat = ctx.noise
        ctx.noise = {name: v.unflatten(0, (-1, self.groups)) for name, v in flat.items()}
        try:
            f = self.inner.on_preactivation(1, h_in, f, ctx)
        finally:
            ctx.noise = flat
        return f.expand(-1, self.groups, *f.shape[2:]).flatten(0, 1)


def _mean_gradient(spec: BackboneSpec, reg: Regularizer, plan: KernelPlan, adapted: Params, fixed: Params,
                   x: torch.Tensor, targets: torch.Tensor, noise: dict[str, torch.Tensor], m: int) -> Params:
    """Gradient of one task's inner loss averaged over m samples as one batch [n * m, ...], example-major (row
    i * m + s is example i in sample s, as the noise given), so that batch norm groups the samples by a view."""
    n = x.shape[0]
    params = {name: v.detach().requires_grad_(True) for name, v in adapted.items()}
    ops = select_ops(x.device, replace(plan, outside_vmap=True, first_order=True, sample_groups=m))
    ts = targets.unsqueeze(1).expand(n, m, *targets.shape[1:]).flatten(0, 1)
    loss = support_loss(spec, SampleGroups(reg, m), ops, params, fixed, x, ts, noise)   # x once: block 1 forms
    #                                                                                        the m samples
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))   # mean over m*n = mean over m


def adapt_samples_as_batch(spec: BackboneSpec, reg: Regularizer, plan: KernelPlan, adapted: Params, fixed: Params,
                           lrs: Params | float, x: torch.Tensor, targets: torch.Tensor, noise: EpisodeNoise,
                           samples: int, steps: int, sample_chunk: int | None = None) -> Params:
    """K first-order inner steps (Eq. 3) for B tasks, task by task, S samples per step in chunks of at most
    sample_chunk (each chunk's noise drawn when it is used); returns adapted parameters [B, ...]. `plan`: the
    learner's kernel plan, from which this path's is derived."""
    batch = x.shape[0]
    adapted = {name: v.expand(batch, *v.shape) for name, v in adapted.items()}
    fixed = {name: v.detach() for name, v in fixed.items()}      # no gradient for them here: no graph to them

    def chunk_grads(k: int, first: int, end: int) -> Params:
        drawn = noise.example_major(k, first, end)                        # each tensor [B, n * (end - first), ...]
        per_task = [_mean_gradient(spec, reg, plan, {name: v[b] for name, v in adapted.items()}, fixed, x[b],
                                   targets[b], {name: v[b] for name, v in drawn.items()}, end - first)
                    for b in range(batch)]
        return {name: torch.stack([g[name] for g in per_task]) for name in adapted}

    with torch.enable_grad():
        for k in range(steps):
            grads = chunked_sample_mean(partial(chunk_grads, k), samples, sample_chunk)
            adapted = step_parameters(adapted, grads, lrs, first_order=True)
    return {name: v.detach() for name, v in adapted.items()}             # as the vectorized path under no_grad
