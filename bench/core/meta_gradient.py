"""The meta-gradient of Eq. 4 over a meta-batch, by execution path: vmap over tasks with one backward
("vectorized"), a backward per task accumulated ("per_task": one task's second-order graph alive at a time, the
lean CPU path), or the per-task reference loop with one backward ("reference"). All three are the same function
up to floating-point summation order (tested in float64)."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from bench.core.backbone import BackboneSpec
from bench.core.inner_loop import adapt_task, query_logits, task_noises
from bench.core.learner import MetaLearner
from bench.core.regularizer import Params, Regularizer
from bench.data.episodes import Episodes
from bench.ops.dispatch import Ops, select_ops

GRAD_CLIP = 3.0          # elementwise clipping of the meta-gradient to [-3, 3], as in the release
MetaGradients = tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]   # (meta-loss, accuracy per task, gradients)


def _grads_or_zeros(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


@dataclasses.dataclass
class TaskLearner:
    """What one task's meta-gradient needs of a learner: its spec and regularizer, the operations of the support
    passes (outside vmap) and of the query pass (also first order: its backward is never differentiated again),
    theta, the meta-only parameters, alpha and every meta-learned tensor in the learner's order."""

    spec: BackboneSpec
    reg: Regularizer
    support_ops: Ops
    query_ops: Ops
    adapted: Params
    meta_only: Params
    lrs: Params | float
    parameters: list[torch.Tensor]
    first_order: bool

    @classmethod
    def of(cls, learner: MetaLearner) -> TaskLearner:
        """The parts of `learner` (the same tensors, not copies)."""
        support = select_ops(learner.device, dataclasses.replace(learner.ops.plan, outside_vmap=True))
        query = select_ops(learner.device, dataclasses.replace(learner.ops.plan, outside_vmap=True, first_order=True))
        return cls(learner.spec, learner.reg, support, query, learner.adapted, learner.meta_only, learner.lrs(),
                   learner.parameters(), learner.config.first_order)


def task_meta_gradient(parts: TaskLearner, x_support: torch.Tensor, targets: torch.Tensor,
                       noises: list[dict[str, torch.Tensor]], x_query: torch.Tensor, y_query: torch.Tensor,
                       batch: int) -> MetaGradients:
    """One task's (query loss, query accuracy, d loss / batch / d parameters): adapt (Eq. 3), score the query set
    (Eq. 4) and backpropagate; its second-order graph is freed on return."""
    adapted = adapt_task(parts.spec, parts.reg, parts.support_ops, dict(parts.adapted), parts.meta_only, parts.lrs,
                         x_support, targets, noises, parts.first_order)
    logits = query_logits(parts.spec, parts.reg, parts.query_ops, adapted, parts.meta_only, x_query)
    loss = F.cross_entropy(logits, y_query)                                  # Eq. 4, one task
    accuracy = (logits.argmax(-1) == y_query).to(logits.dtype).mean()
    return loss.detach(), accuracy, _grads_or_zeros(loss / batch, parts.parameters)


def task_inputs(learner: MetaLearner, ep: Episodes) -> list[tuple]:
    """Each task's (x_support, one-hot targets, its noise of every inner step, x_query, y_query): the noise of
    all K steps drawn first, exactly as the vectorized path draws it (same stream, same values)."""
    batch, n = ep.x_support.shape[:2]
    noise_fn, samples = learner.noise_fn(n, batch), learner.samples(learner.config.mc_train)
    noises = [noise_fn(k, 0, samples) for k in range(learner.config.inner_steps)]
    targets = learner.one_hot(ep.y_support)
    return [(ep.x_support[b], targets[b], task_noises(noises, b), ep.x_query[b], ep.y_query[b])
            for b in range(batch)]


def sum_task_results(results: list[MetaGradients]) -> MetaGradients:
    """(mean loss, accuracy per task, summed gradients) of per-task results, summed in task order."""
    total = [torch.zeros_like(g) for g in results[0][2]]
    for _, _, grads in results:
        for acc, g in zip(total, grads):
            acc.add_(g)
    return torch.stack([r[0] for r in results]).mean(), torch.stack([r[1] for r in results]), total


def _per_task(learner: MetaLearner, ep: Episodes) -> MetaGradients:
    """Adapt, score and backpropagate task by task; one task's graph is alive at a time and the intra-op threads
    split each task's ops (bench/execution/task_processes.py runs the tasks on several processes instead)."""
    tasks, parts = task_inputs(learner, ep), TaskLearner.of(learner)
    return sum_task_results([task_meta_gradient(parts, *task, len(tasks)) for task in tasks])


def meta_gradients(learner: MetaLearner, ep: Episodes, execution: str | None = None) -> MetaGradients:
    """(meta-loss, query accuracy per task, d loss / d learner.parameters()) on a meta-batch, by `execution`
    (default: the learner's): the same numbers up to floating-point summation order."""
    execution = execution or learner.config.execution
    if execution == "per_task":
        return _per_task(learner, ep)
    loss, accuracy = learner.meta_loss(ep.x_support, ep.y_support, ep.x_query, ep.y_query,
                                       vectorized=execution == "vectorized")
    return loss, accuracy, _grads_or_zeros(loss, learner.parameters())


def clip(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Elementwise clipping to [-3, 3] (the release)."""
    return [g.clamp(-GRAD_CLIP, GRAD_CLIP) for g in grads]
