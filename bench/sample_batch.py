"""The meta-test's inner loop on the CPU with the S Monte-Carlo samples of a task as one batch of S * n examples
(Algorithm 2, lines 5-8): each sample keeps its own transductive batch-norm statistics, and one backward of the
S-sample mean loss gives the mean of the S gradients, with no vmap and no per-sample weight gradients. For
regularizers whose hooks act on each example alone (Regularizer.samples_as_batch); the same adaptation as the
vectorized path up to summation order (tests/test_sample_batch.py, float64)."""
from __future__ import annotations

import dataclasses

import torch

from bench.backbone import BackboneSpec
from bench.hooks import Params, Regularizer
from bench.inner_loop import NoiseFn, step_parameters, support_loss


def _mean_gradient(spec: BackboneSpec, reg: Regularizer, adapted: Params, fixed: Params, x: torch.Tensor,
                   targets: torch.Tensor, noise: dict[str, torch.Tensor]) -> Params:
    """Gradient of one task's inner loss averaged over m samples: noise [m, n, ...] -> one batch [n * m, ...],
    example-major (row i * m + s is example i in sample s), so that batch norm groups the samples by a view."""
    m, n = next(iter(noise.values())).shape[:2]
    params = {name: v.detach().requires_grad_(True) for name, v in adapted.items()}
    stacked = dataclasses.replace(spec, sample_groups=m, outside_vmap=True)
    xs = x.unsqueeze(1).expand(n, m, *x.shape[1:]).flatten(0, 1)
    ts = targets.unsqueeze(1).expand(n, m, *targets.shape[1:]).flatten(0, 1)
    batch_noise = {k: v.transpose(0, 1).flatten(0, 1) for k, v in noise.items()}
    loss = support_loss(stacked, reg, params, fixed, xs, ts, batch_noise)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))   # mean over m*n = mean over m


def adapt_samples_as_batch(spec: BackboneSpec, reg: Regularizer, adapted: Params, fixed: Params,
                           lrs: Params | float, x: torch.Tensor, targets: torch.Tensor, noise_fn: NoiseFn,
                           samples: int, steps: int, sample_chunk: int | None = None) -> Params:
    """K first-order inner steps (Eq. 3) for B tasks, task by task, S samples per step in chunks of at most
    sample_chunk (each chunk's noise drawn when it is used); returns adapted parameters [B, ...]."""
    chunk = sample_chunk or samples
    tasks = [dict(adapted) for _ in range(x.shape[0])]
    with torch.enable_grad():
        for k in range(steps):
            totals: list[Params] = [{} for _ in tasks]
            for start in range(0, samples, chunk):
                stop = min(samples, start + chunk)
                noise = noise_fn(k, start, stop)                            # each tensor [B, stop - start, ...]
                for b, total in enumerate(totals):
                    grads = _mean_gradient(spec, reg, tasks[b], fixed, x[b], targets[b],
                                           {name: v[b] for name, v in noise.items()})
                    weight = (stop - start) / samples
                    for name, g in grads.items():
                        total[name] = total[name] + weight * g if name in total else weight * g
            tasks = [step_parameters(task, total, lrs, first_order=True) for task, total in zip(tasks, totals)]
    return {name: torch.stack([task[name] for task in tasks]).detach() for name in adapted}   # as under no_grad
