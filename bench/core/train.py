"""Meta-training (Algorithm 1): outer Adam with elementwise clipping, progress bar, resumable checkpoints."""
from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path
from typing import Callable, Protocol

import torch
from tqdm.auto import tqdm

from bench.core import checkpoint
from bench.core.executor import Executor
from bench.core.learner import MetaLearner
from bench.core.meta_gradient import clip
from bench.data.episodes import EpisodeSampler, Episodes
from bench.util.devices import precision_settings
from bench.util.failures import Diverged, NonFinite


# A meta-loss above this many times a chance-level one (ln N for N ways) is divergence, not learning.
DIVERGED_LOSS_FACTOR = 100.0


class TrainingDiverged(NonFinite):
    """The meta-loss became NaN or infinite at `iteration`."""

    def __init__(self, message: str, iteration: int):
        super().__init__(message, "train", iteration)


def make_optimizer(learner: MetaLearner, meta_lr: float, capturable: bool = False) -> torch.optim.Adam:
    """Adam over every meta-learned tensor with a constant learning rate (capturable: inside a CUDA graph)."""
    return torch.optim.Adam(learner.parameters(), lr=meta_lr, capturable=capturable)


def outer_step(learner: MetaLearner, optimizer: torch.optim.Optimizer, episodes: Episodes,
               executor: Executor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One meta-update on a meta-batch (Algorithm 1, lines 3-9); returns (loss, mean query accuracy) as tensors.
    The clipped gradients are written into existing .grad buffers (fixed addresses for a CUDA graph)."""
    loss, accuracy, grads = (executor or Executor()).meta_gradients(learner, episodes)
    for p, g in zip(learner.parameters(), clip(grads)):
        if p.grad is None:
            p.grad = g
        else:
            p.grad.copy_(g)
    optimizer.step()
    return loss.detach(), accuracy.mean().detach()


class RunningCurve:
    """Per-iteration loss and accuracy stay on the device and are read back once per block or checkpoint
    (no host sync every iteration); blocks of `log_every` iterations become points of the training curve."""

    def __init__(self, log_every: int, curve: list[dict], block: tuple[float, float, int], ways: int):
        self.log_every, self.curve, self.block = log_every, curve, block
        self.chance_loss = math.log(ways)
        self.pending: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor, accuracy: torch.Tensor) -> None:
        """Record one iteration's (loss, accuracy) without synchronising."""
        self.pending.append(torch.stack([loss.float(), accuracy.float()]))

    def flush(self, done: int) -> None:
        """Read back the pending iterations (the last is `done`); stop clearly on a NaN or infinite loss."""
        values = torch.stack(self.pending).cpu().tolist() if self.pending else []
        first = done - len(values) + 1
        self.pending = []
        total_loss, total_acc, n = self.block
        for offset, (loss, acc) in enumerate(values):
            if not math.isfinite(loss):
                raise TrainingDiverged(f"meta-loss became {loss} at iteration {first + offset}; lower meta_lr "
                                       "or inner_lr, or check the regularizer's hyper-parameters", first + offset)
            if loss > DIVERGED_LOSS_FACTOR * self.chance_loss:
                raise Diverged(f"the meta-loss diverged: {loss:.3g} at iteration {first + offset}, above "
                               f"{DIVERGED_LOSS_FACTOR:g} x the chance level ln({round(math.exp(self.chance_loss))}) "
                               f"= {self.chance_loss:.2f}; lower meta_lr or inner_lr", "train", first + offset)
            total_loss, total_acc, n = total_loss + loss, total_acc + acc, n + 1
        self.block = (total_loss, total_acc, n)

    def close_block(self, done: int) -> dict:
        """Append the finished block to the curve and start a new one."""
        total_loss, total_acc, n = self.block
        point = {"iteration": done, "loss": total_loss / n, "accuracy": 100 * total_acc / n}
        self.curve.append(point)
        self.block = (0.0, 0.0, 0)
        return point


class TrainingLog(Protocol):
    """Receives the training curve as it grows (meta_train's `log`), e.g. to write it to a file a user can follow."""

    def start(self, iteration: int, points: list[dict]) -> None:
        """Training starts after `iteration` (0, or a checkpoint's), whose curve holds `points` so far."""

    def add(self, point: dict) -> None:
        """A new point of the training curve: {iteration, loss, accuracy}."""


def _state(learner: MetaLearner, optimizer, sampler: EpisodeSampler, iteration: int, curve: RunningCurve,
           seconds: float) -> dict:
    return {"learner": learner.state_dict(), "optimizer": optimizer.state_dict(), "sampler": sampler.state(),
            "torch_rng": torch.get_rng_state(), "iteration": iteration, "curve": curve.curve,
            "block": curve.block, "seconds": seconds}


def meta_train(learner: MetaLearner, sampler: EpisodeSampler, iterations: int, meta_lr: float, meta_batch: int,
               checkpoint_path: Path | None = None, checkpoint_every: int = 1000, log_every: int = 100,
               progress: bool = True, on_iteration: Callable[[int], None] | None = None,
               executor: Executor | None = None, log: TrainingLog | None = None) -> dict:
    """Run (or resume from checkpoint_path) meta-training up to `iterations` (Algorithm 1); returns the training
    summary. The training curve holds the mean loss and accuracy of each block of `log_every` iterations, and
    goes to `log` as it grows; the executor (default: the core's own computation) says how each step runs."""
    executor = executor or Executor()
    optimizer = make_optimizer(learner, meta_lr, capturable=executor.capturable_optimizer)
    ways = learner.spec.ways
    start, curve, spent = 0, RunningCurve(log_every, [], (0.0, 0.0, 0), ways), 0.0
    if checkpoint_path is not None and checkpoint_path.exists():
        with checkpoint.resuming_from(checkpoint_path):
            state = checkpoint.load(checkpoint_path)
            learner.load_state_dict(state["learner"])
            for group in state["optimizer"]["param_groups"]:
                group["capturable"] = executor.capturable_optimizer   # a run may resume on another device
            optimizer.load_state_dict(state["optimizer"])
            sampler.set_state(state["sampler"])
            torch.set_rng_state(state["torch_rng"])
            start, spent = state["iteration"], state["seconds"]
            curve = RunningCurve(log_every, state["curve"], tuple(state["block"]), ways)
    if log is not None:
        log.start(start, list(curve.curve))
    with executor.training(learner, meta_batch) as ran:
        step = partial(outer_step, learner, optimizer, executor=executor)
        began = time.perf_counter()
        bar = tqdm(range(start, iterations), initial=start, total=iterations, disable=not progress,
                   desc="meta-train", dynamic_ncols=True, leave=False)
        for it in bar:
            episodes = sampler.sample(meta_batch)
            if it == start:
                step = executor.repeated_step(step, learner, optimizer, episodes)
            curve.add(*step(episodes))
            done = it + 1
            block_done = (done % log_every == 0) or done == iterations
            save = checkpoint_path is not None and (done % checkpoint_every == 0 or done == iterations)
            if block_done or save:
                curve.flush(done)
            if block_done:
                point = curve.close_block(done)
                bar.set_postfix(loss=f"{point['loss']:.3f}", acc=f"{point['accuracy']:.1f}%")
                if log is not None:
                    log.add(point)
            if save:
                checkpoint.atomic_save(_state(learner, optimizer, sampler, done, curve,
                                              spent + time.perf_counter() - began), checkpoint_path)
            if on_iteration is not None:
                on_iteration(done)
        bar.close()
    points = curve.curve
    return {"iterations": iterations, "resumed_from": start, "curve": points,
            "execution": learner.config.execution, **ran,
            "precision": precision_settings(),
            "seconds": spent + time.perf_counter() - began,   # all sessions of this run
            "final_loss": points[-1]["loss"] if points else None,
            "final_accuracy": points[-1]["accuracy"] if points else None}
