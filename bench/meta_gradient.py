"""The meta-gradient of Eq. 4 over a meta-batch, by execution path: vmap over tasks with one backward
("vectorized"), a backward per task accumulated ("per_task": one task's second-order graph alive at a time, the
lean CPU path), or the per-task reference loop with one backward ("reference"). All three are the same function
up to floating-point summation order (tested in float64)."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from bench.episodes import Episodes
from bench.inner_loop import adapt_task, query_logits, task_noises
from bench.learner import MetaLearner

GRAD_CLIP = 3.0          # elementwise clipping of the meta-gradient to [-3, 3], as in the release


def _grads_or_zeros(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _per_task(learner: MetaLearner, ep: Episodes) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Adapt, score and backpropagate task by task; the noise of all K steps is drawn first, exactly as the
    vectorized path draws it (same stream, same values). One task's graph is alive at a time; the intra-op
    threads split each task's ops (running T tasks at once, one thread each, measured no faster on two cores and
    held T graphs: bench/peers.py)."""
    batch, n = ep.x_support.shape[:2]
    noise_fn, samples = learner.noise_fn(n, batch), learner.samples(learner.config.mc_train)
    noises = [noise_fn(k, 0, samples) for k in range(learner.config.inner_steps)]
    targets = learner.one_hot(ep.y_support)
    spec = dataclasses.replace(learner.spec, outside_vmap=True)         # the stock batch-norm kernel
    query_spec = dataclasses.replace(spec, first_order=True)             # its backward is first order
    params = learner.parameters()

    def task(b: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        adapted = adapt_task(spec, learner.reg, dict(learner.adapted), learner.meta_only, learner.lrs(),
                             ep.x_support[b], targets[b], task_noises(noises, b), learner.config.first_order)
        logits = query_logits(query_spec, learner.reg, adapted, learner.meta_only, ep.x_query[b])
        loss = F.cross_entropy(logits, ep.y_query[b])                       # Eq. 4, task b
        accuracy = (logits.argmax(-1) == ep.y_query[b]).to(learner.dtype).mean()
        return loss.detach(), accuracy, _grads_or_zeros(loss / batch, params)

    results = [task(b) for b in range(batch)]
    total = [torch.zeros_like(p) for p in params]
    for _, _, grads in results:
        for acc, g in zip(total, grads):
            acc.add_(g)
    return torch.stack([r[0] for r in results]).mean(), torch.stack([r[1] for r in results]), total


def meta_gradients(learner: MetaLearner, ep: Episodes,
                   execution: str | None = None) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(meta-loss, query accuracy per task, d loss / d learner.parameters()) on a meta-batch; execution=None
    follows the learner's config."""
    execution = execution or learner.config.execution
    if execution == "per_task":
        return _per_task(learner, ep)
    loss, accuracy = learner.meta_loss(ep.x_support, ep.y_support, ep.x_query, ep.y_query,
                                       vectorized=execution == "vectorized")
    return loss, accuracy, _grads_or_zeros(loss, learner.parameters())


def resolve_execution(mode: str, device: torch.device | str) -> str:
    """'auto' -> vmap over tasks on a GPU, a backward per task on the CPU (the fastest on each, measured by
    bench/peers.py and bench/speed.py); any other mode is kept."""
    if mode != "auto":
        return mode
    return "vectorized" if torch.device(device).type == "cuda" else "per_task"


def clip(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Elementwise clipping to [-3, 3] (the release)."""
    return [g.clamp(-GRAD_CLIP, GRAD_CLIP) for g in grads]
