"""The inner loop of Eq. 3 and the deterministic query path of Eq. 4: vectorized over tasks, plus the
per-task reference loop that tests compare it with."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from bench.core.backbone import BackboneSpec, forward
from bench.core.regularizer import ForwardContext, Params, Regularizer
from bench.ops.dispatch import Ops

# (inner step k, first sample, end sample) -> that step's noise for samples [first, end) of every task, each tensor
# [B, end - first, ...]; called once per (step, chunk), in order, so a source may draw as it is called.
NoiseFn = Callable[[int, int, int], dict[str, torch.Tensor]]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against soft (one-hot or mixed) targets."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def support_loss(spec: BackboneSpec, reg: Regularizer, ops: Ops, adapted: Params, fixed: Params, x: torch.Tensor,
                 targets: torch.Tensor, noise: dict[str, torch.Tensor]) -> torch.Tensor:
    """One Monte-Carlo sample of the inner loss on one task's support set (stochastic path, Eq. 3)."""
    params = {**adapted, **fixed}

    def loss_at(inputs: torch.Tensor) -> torch.Tensor:
        ctx = ForwardContext(params, noise, targets, ops)
        logits = forward(spec, params, inputs, reg, ctx)
        return soft_cross_entropy(logits, ctx.targets) + ctx.extra_loss

    return loss_at(reg.perturb_support(x, loss_at, ForwardContext(params, noise, targets, ops)))


def mc_support_loss(spec: BackboneSpec, reg: Regularizer, ops: Ops, adapted: Params, fixed: Params, x: torch.Tensor,
                    targets: torch.Tensor, noise: dict[str, torch.Tensor], vectorize: bool = True) -> torch.Tensor:
    """Inner loss averaged over the S samples on the noise's leading dim (Eq. 3, Algorithm 2 line 7)."""
    one = partial(support_loss, spec, reg, ops, adapted, fixed, x, targets)
    if not noise:
        return one({})
    n_samples = next(iter(noise.values())).shape[0]
    if n_samples == 1:
        return one({k: v[0] for k, v in noise.items()})
    if vectorize:
        return vmap(one)(noise).mean()
    return torch.stack([one({k: v[s] for k, v in noise.items()}) for s in range(n_samples)]).mean()


def query_logits(spec: BackboneSpec, reg: Regularizer, ops: Ops, adapted: Params, fixed: Params,
                 x: torch.Tensor) -> torch.Tensor:
    """Logits on the deterministic path (a = mu, no sampling), used for the query set (Eq. 4)."""
    params = {**adapted, **fixed}
    ctx = ForwardContext(params, None, torch.empty(0, dtype=x.dtype, device=x.device), ops)
    return forward(spec, params, x, reg, ctx)


def step_parameters(adapted: Params, grads: Params, lrs: Params | float, first_order: bool) -> Params:
    """theta_{k+1} = theta_k - alpha * grad (Eq. 3); alpha a float (MAML) or per-element tensors (Meta-SGD)."""
    out = {}
    for name, value in adapted.items():
        g = grads[name].detach() if first_order else grads[name]
        lr = lrs if isinstance(lrs, float) else lrs[name]
        out[name] = value - lr * g
    return out


def chunked_sample_mean(grads_of: Callable[[int, int], Params], samples: int, chunk: int | None) -> Params:
    """The S-sample mean of gradients from grads_of(first, end) (the mean over samples [first, end)), over chunks
    of at most `chunk` samples when given, each weighted by its size: exact, as the mean is linear, and one
    chunk's memory at a time."""
    if not chunk or samples <= chunk:
        return grads_of(0, samples)
    total: Params = {}
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        weight = (stop - start) / samples
        total = {n: total[n] + weight * g if n in total else weight * g for n, g in grads_of(start, stop).items()}
    return total


def _sample_mean_grads(loss_grad: Callable, in_dims: tuple, adapted: Params, fixed: Params, x: torch.Tensor,
                       targets: torch.Tensor, noise_of: Callable[[int, int], dict[str, torch.Tensor]], samples: int,
                       chunk: int | None) -> Params:
    """Per-task gradients of the S-sample mean loss (each chunk's noise drawn when it is used)."""
    return chunked_sample_mean(
        lambda first, end: vmap(loss_grad, in_dims=in_dims)(adapted, fixed, x, targets, noise_of(first, end)),
        samples, chunk)


def adapt_vectorized(spec: BackboneSpec, reg: Regularizer, ops: Ops, adapted: Params, fixed: Params,
                     lrs: Params | float, x: torch.Tensor, targets: torch.Tensor, noise_fn: NoiseFn, samples: int,
                     steps: int, first_order: bool, sample_chunk: int | None = None) -> Params:
    """K inner steps for all B tasks at once (vmap over tasks), S = `samples` Monte-Carlo samples per step;
    returns adapted parameters [B, ...]. sample_chunk bounds how many samples are forwarded at once (memory)."""
    loss_grad = grad(partial(mc_support_loss, spec, reg, ops), argnums=0)
    batch = x.shape[0]
    batched = False
    for k in range(steps):
        in_dims = (0 if batched else None, None, 0, 0, 0)
        grads = _sample_mean_grads(loss_grad, in_dims, adapted, fixed, x, targets, partial(noise_fn, k), samples,
                                   sample_chunk)
        adapted = step_parameters(adapted, grads, lrs, first_order)
        batched = True
    if not batched:
        adapted = {n: v.expand(batch, *v.shape) for n, v in adapted.items()}
    return adapted


def adapt_task(spec: BackboneSpec, reg: Regularizer, ops: Ops, adapted: Params, fixed: Params, lrs: Params | float,
               x: torch.Tensor, targets: torch.Tensor, noises: list[dict[str, torch.Tensor]],
               first_order: bool) -> Params:
    """One task's inner steps (Eq. 3) with torch.autograd.grad; noises[k] is step k's noise [S, ...]."""
    for noise in noises:
        loss = mc_support_loss(spec, reg, ops, adapted, fixed, x, targets, noise, vectorize=False)
        grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=not first_order)
        adapted = step_parameters(adapted, dict(zip(adapted, grads)), lrs, first_order)
    return adapted


def task_noises(noises: list[dict[str, torch.Tensor]], b: int) -> list[dict[str, torch.Tensor]]:
    """Task b's slice of every step's noise (each tensor [B, S, ...] -> [S, ...])."""
    return [{n: v[b] for n, v in noise.items()} for noise in noises]


def adapt_reference(spec: BackboneSpec, reg: Regularizer, ops: Ops, adapted: Params, fixed: Params,
                    lrs: Params | float, x: torch.Tensor, targets: torch.Tensor, noise_fn: NoiseFn, samples: int,
                    steps: int, first_order: bool) -> list[Params]:
    """The same K inner steps as a plain per-task loop with torch.autograd.grad (the reference)."""
    noises = [noise_fn(k, 0, samples) for k in range(steps)]
    return [adapt_task(spec, reg, ops, dict(adapted), fixed, lrs, x[b], targets[b], task_noises(noises, b),
                       first_order) for b in range(x.shape[0])]


def batched_query_logits(spec: BackboneSpec, reg: Regularizer, ops: Ops, adapted: Params, fixed: Params,
                         x: torch.Tensor) -> torch.Tensor:
    """Query logits [B, M, N] for adapted parameters [B, ...] (vmap over tasks)."""
    return vmap(partial(query_logits, spec, reg, ops), in_dims=(0, None, 0))(adapted, fixed, x)
