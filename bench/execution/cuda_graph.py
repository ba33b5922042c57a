"""The whole meta-training step (inner loop, second-order meta-gradient, clipping, Adam) captured once as a CUDA
graph and replayed every iteration: the sampler fills static episode buffers, Adam is capturable, and the noise
generator is registered with the graph so that each replay draws fresh noise from the same stream as eager
steps would. A replay issues no host work besides the copy of the episodes."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import torch

from bench.core.executor import Executor, Step
from bench.core.learner import MetaLearner
from bench.data.episodes import Episodes
from bench.util.errors import UserError

WARMUP_STEPS = 3          # eager steps on a side stream before capture: Adam's state, cuDNN autotuning, allocator
# cuDNN autotuning off: it changed no step time (measurements/h100_2026-11-26) and costs seconds of set-up per cell
CUDNN_BENCHMARK = False


def _tensors(episodes: Episodes) -> list[torch.Tensor]:
    """The episode tensors themselves (dataclasses.astuple would deep-copy them)."""
    return [getattr(episodes, f.name) for f in dataclasses.fields(episodes)]


class _Snapshot:
    """Parameters, optimizer state and noise-generator state, restored in place (the graph keeps addresses)."""

    def __init__(self, learner: MetaLearner, optimizer: torch.optim.Optimizer):
        self.params = [p.detach().clone() for p in learner.parameters()]
        self.state = {id(p): {k: v.clone() for k, v in optimizer.state[p].items() if torch.is_tensor(v)}
                      for p in learner.parameters() if p in optimizer.state}
        self.rng = learner.noise_generator.get_state()

    def restore(self, learner: MetaLearner, optimizer: torch.optim.Optimizer) -> None:
        """Copy everything back; optimizer state created since the snapshot goes back to its initial zeros."""
        with torch.no_grad():
            for p, saved in zip(learner.parameters(), self.params):
                p.copy_(saved)
                saved_state = self.state.get(id(p), {})
                for key, value in optimizer.state.get(p, {}).items():
                    if torch.is_tensor(value):
                        value.copy_(saved_state[key]) if key in saved_state else value.zero_()
        learner.noise_generator.set_state(self.rng)


class GraphedStep:
    """step(episodes) -> (loss, accuracy): the captured eager step, replayed on a copy of the episodes."""

    def __init__(self, learner: MetaLearner, optimizer: torch.optim.Optimizer, step: Step, episodes: Episodes):
        if learner.device.type != "cuda":
            raise UserError("a CUDA graph needs a CUDA device; use cuda_graph=off (or auto) on the CPU")
        self.static = Episodes(*(t.clone() for t in _tensors(episodes)))
        snapshot = _Snapshot(learner, optimizer)
        side = torch.cuda.Stream(learner.device)
        side.wait_stream(torch.cuda.current_stream(learner.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                step(self.static)
        torch.cuda.current_stream(learner.device).wait_stream(side)
        snapshot.restore(learner, optimizer)          # warm-up steps leave no trace in the training run
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(learner.noise_generator)
        try:
            with torch.cuda.graph(self.graph):
                self.loss, self.accuracy = step(self.static)
        except BaseException:
            snapshot.restore(learner, optimizer)
            raise

    def __call__(self, episodes: Episodes) -> tuple[torch.Tensor, torch.Tensor]:
        for static, fresh in zip(_tensors(self.static), _tensors(episodes)):
            static.copy_(fresh)
        self.graph.replay()
        return self.loss.clone(), self.accuracy.clone()


def use_graph(mode: str, device: torch.device) -> bool:
    """cuda_graph auto | on | off -> whether to capture; 'on' without a CUDA device is an error."""
    if mode == "on" and device.type != "cuda":
        raise UserError("cuda_graph=on needs --device cuda; use cuda_graph=auto or off on the CPU")
    return mode == "on" or (mode == "auto" and device.type == "cuda")


class CudaExecutor(Executor):
    """The core's computation on a GPU, cuDNN autotuning off (CUDNN_BENCHMARK)."""

    graphed: bool = False

    @contextlib.contextmanager
    def training(self, learner: MetaLearner, meta_batch: int) -> Iterator[dict]:
        torch.backends.cudnn.benchmark = CUDNN_BENCHMARK
        yield {"task_processes": 1, "cuda_graph": self.graphed}


class GraphExecutor(CudaExecutor):
    """The core's computation on a GPU with the whole training step captured once and replayed (GraphedStep)."""

    capturable_optimizer = True
    graphed = True

    def repeated_step(self, step: Step, learner: MetaLearner, optimizer: torch.optim.Optimizer,
                      first: Episodes) -> Step:
        return GraphedStep(learner, optimizer, step, first)
