"""The CPU executor: a meta-batch's tasks on several processes of one intra-op thread each (task_processes.py), the
meta-test's S Monte-Carlo samples as one batch where the regularizer allows it (samples_as_batch.py), one test
episode at a time. The same numbers as the core's computation up to floating-point summation order
(tests/execution/); what each gains: docs/speed.md."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from bench.core.executor import Executor
from bench.core.learner import MetaLearner
from bench.core.meta_gradient import MetaGradients, meta_gradients
from bench.core.noise import EpisodeNoise
from bench.core.regularizer import Params
from bench.data.episodes import Episodes
from bench.execution.samples_as_batch import adapt_samples_as_batch
from bench.execution.task_processes import TaskProcessPool
from bench.util.devices import intra_op_threads


def pool_size(learner: MetaLearner, meta_batch: int) -> int:
    """Processes for a CPU run of the per-task path: one per intra-op thread it was given (torch's setting), at
    most one per task; 1 (no pool) for another path or with one thread."""
    if learner.config.execution != "per_task":
        return 1
    return max(1, min(torch.get_num_threads(), meta_batch))


class CpuExecutor(Executor):
    """Task processes in training, one episode at a time and the samples as one batch at meta-test."""

    def __init__(self, execution: str | None = None):
        super().__init__(execution)
        self.pool: TaskProcessPool | None = None

    @contextlib.contextmanager
    def training(self, learner: MetaLearner, meta_batch: int) -> Iterator[dict]:
        processes = pool_size(learner, meta_batch) if self.execution in (None, "per_task") else 1
        if processes < 2:
            yield {"task_processes": 1, "cuda_graph": False}
            return
        with TaskProcessPool(learner, processes) as self.pool, intra_op_threads(1):
            try:
                yield {"task_processes": processes, "cuda_graph": False}
            finally:
                self.pool = None

    def meta_gradients(self, learner: MetaLearner, episodes: Episodes) -> MetaGradients:
        if self.pool is not None:
            return self.pool.meta_gradients(learner, episodes)
        return meta_gradients(learner, episodes, self.execution)

    def test_batch(self, requested: int) -> int:
        """One episode at a time: batching episodes gains no time on the CPU and costs memory (docs/speed.md);
        results depend on it only through floating-point summation order (the noise is per episode)."""
        return 1

    def test_route(self, learner: MetaLearner, samples: int) -> str:
        per_example = learner.reg.acts_per_example and learner.samples(samples) > 1
        return "samples_as_batch" if per_example else "vectorized"

    def adapt_for_test(self, learner: MetaLearner, x_support: torch.Tensor, y_support: torch.Tensor, samples: int,
                       sample_chunk: int | None, noise: EpisodeNoise) -> Params:
        if self.test_route(learner, samples) == "vectorized":
            return super().adapt_for_test(learner, x_support, y_support, samples, sample_chunk, noise)
        return adapt_samples_as_batch(learner.spec, learner.reg, learner.ops.plan, learner.adapted, learner.meta_only,
                                      learner.lrs(), x_support, learner.one_hot(y_support), noise,
                                      learner.samples(samples), learner.config.inner_steps, sample_chunk)
