"""Meta-training (Algorithm 1): outer Adam with elementwise clipping, progress bar, resumable checkpoints."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from bench import checkpoint
from bench.episodes import EpisodeSampler
from bench.errors import UserError
from bench.learner import MetaLearner, clipped_meta_gradients


class TrainingDiverged(UserError):
    """The meta-loss became NaN or infinite."""


def make_optimizer(learner: MetaLearner, meta_lr: float) -> torch.optim.Adam:
    """Adam over every meta-learned tensor with a constant learning rate."""
    return torch.optim.Adam(learner.parameters(), lr=meta_lr)


def outer_step(learner: MetaLearner, optimizer: torch.optim.Optimizer, episodes) -> tuple[torch.Tensor, torch.Tensor]:
    """One meta-update on a meta-batch; returns (loss, mean query accuracy) as tensors."""
    loss, accuracy = learner.meta_loss(episodes.x_support, episodes.y_support, episodes.x_query, episodes.y_query)
    params = learner.parameters()
    for p, g in zip(params, clipped_meta_gradients(loss, params)):
        p.grad = g
    optimizer.step()
    return loss.detach(), accuracy.mean().detach()


def _state(learner: MetaLearner, optimizer, sampler: EpisodeSampler, iteration: int, curve: list,
           block: tuple[float, float, int], seconds: float) -> dict:
    return {"learner": learner.state_dict(), "optimizer": optimizer.state_dict(), "sampler": sampler.state(),
            "torch_rng": torch.get_rng_state(), "iteration": iteration, "curve": curve, "block": block,
            "seconds": seconds}


def meta_train(learner: MetaLearner, sampler: EpisodeSampler, iterations: int, meta_lr: float, meta_batch: int,
               checkpoint_path: Path | None = None, checkpoint_every: int = 1000, log_every: int = 100,
               progress: bool = True, on_iteration: Callable[[int], None] | None = None) -> dict:
    """Run (or resume from checkpoint_path) meta-training up to `iterations`; returns the training summary.

    The training curve holds the mean loss and accuracy of each block of `log_every` iterations."""
    optimizer = make_optimizer(learner, meta_lr)
    start, curve, block, spent = 0, [], (0.0, 0.0, 0), 0.0
    if checkpoint_path is not None and checkpoint_path.exists():
        state = checkpoint.load(checkpoint_path, learner.device)
        learner.load_state_dict(state["learner"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.set_state(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        start, curve, block, spent = state["iteration"], state["curve"], state["block"], state["seconds"]
    block_loss, block_acc, block_n = block
    began = time.perf_counter()
    bar = tqdm(range(start, iterations), initial=start, total=iterations, disable=not progress,
               desc="meta-train", dynamic_ncols=True, leave=False)
    for it in bar:
        loss, acc = outer_step(learner, optimizer, sampler.sample(meta_batch))
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise TrainingDiverged(f"meta-loss became {loss_value} at iteration {it + 1}; lower meta_lr or "
                                   "inner_lr, or check the regularizer's hyper-parameters")
        block_loss, block_acc, block_n = block_loss + loss_value, block_acc + acc.item(), block_n + 1
        done = it + 1
        if block_n == log_every or done == iterations:
            curve.append({"iteration": done, "loss": block_loss / block_n, "accuracy": 100 * block_acc / block_n})
            bar.set_postfix(loss=f"{block_loss / block_n:.3f}", acc=f"{100 * block_acc / block_n:.1f}%")
            block_loss, block_acc, block_n = 0.0, 0.0, 0
        if checkpoint_path is not None and (done % checkpoint_every == 0 or done == iterations):
            checkpoint.atomic_save(_state(learner, optimizer, sampler, done, curve,
                                                  (block_loss, block_acc, block_n),
                                                  spent + time.perf_counter() - began), checkpoint_path)
        if on_iteration is not None:
            on_iteration(done)
    bar.close()
    return {"iterations": iterations, "resumed_from": start, "curve": curve,
            "seconds": spent + time.perf_counter() - began,   # all sessions of this run
            "final_loss": curve[-1]["loss"] if curve else None,
            "final_accuracy": curve[-1]["accuracy"] if curve else None}
