"""How Algorithms 1-2 run their batched work: the meta-gradient of a meta-batch, the outer step as it repeats, and
a test episode's adaptation and query pass. This base class is the core's own computation; bench/execution/ derives
faster ways to compute the same numbers (task processes, the S samples as one batch, a CUDA graph), and
bench.execution.executor_for picks one per device."""
from __future__ import annotations

import contextlib
from typing import Callable, ClassVar, Iterator

import torch

from bench.core.learner import MetaLearner
from bench.core.meta_gradient import MetaGradients, meta_gradients
from bench.core.noise import EpisodeNoise
from bench.core.regularizer import Params
from bench.data.episodes import Episodes

Step = Callable[[Episodes], tuple[torch.Tensor, torch.Tensor]]      # episodes -> (meta-loss, mean query accuracy)


class Executor:
    """The core's computation: the meta-gradient by `execution` (default: the learner's; vmap over tasks, a
    backward per task or the reference loop), test episodes adapted by vmap over tasks and samples."""

    capturable_optimizer: ClassVar[bool] = False     # Adam must be capturable (a CUDA graph replays the step)

    def __init__(self, execution: str | None = None):
        self.execution = execution

    @contextlib.contextmanager
    def training(self, learner: MetaLearner, meta_batch: int) -> Iterator[dict]:
        """Around a training run (resources such as task processes); yields what the run records of its
        execution."""
        yield {"task_processes": 1, "cuda_graph": False}

    def meta_gradients(self, learner: MetaLearner, episodes: Episodes) -> MetaGradients:
        """(meta-loss, query accuracy per task, d loss / d learner.parameters()) of a meta-batch (Eq. 4)."""
        return meta_gradients(learner, episodes, self.execution)

    def repeated_step(self, step: Step, learner: MetaLearner, optimizer: torch.optim.Optimizer,
                      first: Episodes) -> Step:
        """The outer step as every iteration runs it, given the first meta-batch (a CUDA graph captures it)."""
        return step

    def test_batch(self, requested: int) -> int:
        """Test episodes adapted at once."""
        return requested

    def test_route(self, learner: MetaLearner, samples: int) -> str:
        """How test episodes are adapted (recorded with the result)."""
        return "vectorized"

    def adapt_for_test(self, learner: MetaLearner, x_support: torch.Tensor, y_support: torch.Tensor, samples: int,
                       sample_chunk: int | None, noise: EpisodeNoise) -> Params:
        """First-order adaptation of Algorithm 2 with S = `samples`; parameters [B, ...]."""
        return learner.adapt(x_support, y_support, samples, first_order=True, sample_chunk=sample_chunk,
                             noise_fn=noise)

    def test_query_logits(self, learner: MetaLearner, adapted: Params, x_query: torch.Tensor) -> torch.Tensor:
        """Deterministic query logits [B, M, N] of adapted test episodes (no graph)."""
        return learner.query_logits(adapted, x_query)
