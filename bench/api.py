"""A few-line Python API: build a learner and its samplers for a protocol and a regularizer, meta-train,
meta-test; read a results folder's cells and episodes as tables (cells_frame, episodes_frame)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.core.backbone import BackboneSpec
from bench.core.evaluate import meta_test
from bench.core.executor import Executor
from bench.core.learner import LearnerConfig, MetaLearner
from bench.core.train import meta_train
from bench.data.bank import ImageBank
from bench.data.episodes import EpisodeSampler, FixedEpisodes
from bench.data.registry import load_bank
from bench.execution import executor_for
from bench.execution.allocator import retain_freed_memory
from bench.store.collect import cells_frame, episodes_frame
from bench.store.protocol import Protocol, load_protocol
from bench.util.devices import check_device
from regularizers import build_regularizer

__all__ = ["Experiment", "build_experiment", "cells_frame", "episodes_frame"]

TEST_SEED_OFFSET = 1_000_003      # the meta-test episodes of seed s are drawn from seed s + offset


@dataclass
class Experiment:
    """A protocol x learner x regularizer x seed, with its banks, samplers, meta-learner and the executor that
    runs it fast on its device (bench.execution.executor_for)."""

    protocol: Protocol
    learner: MetaLearner
    train_bank: ImageBank
    test_bank: ImageBank
    seed: int
    executor: Executor
    train_summary: dict[str, Any] = field(default_factory=dict)

    def train(self, checkpoint_path: Path | None = None, progress: bool = True, **kwargs: Any) -> dict:
        """Meta-train for the protocol's iterations (resuming from checkpoint_path when it exists)."""
        p = self.protocol
        sampler = EpisodeSampler(self.train_bank, p.ways, p.shots, p.queries, seed=self.seed,
                                 dtype=self.learner.dtype)
        self.train_summary = meta_train(self.learner, sampler, p.iterations, p.meta_lr, p.meta_batch,
                                        checkpoint_path=checkpoint_path, checkpoint_every=p.checkpoint_every,
                                        progress=progress, executor=self.executor, **kwargs)
        return self.train_summary

    def test(self, episodes: int | None = None, attacks: dict[str, list[float]] | None = None,
             progress: bool = True) -> dict:
        """Meta-test on the protocol's test split: per-episode accuracies, mean, 95% CI and the fingerprint of
        the fixed episodes (shared by every cell of the same protocol shape and seed)."""
        p = self.protocol
        episodes = episodes or p.test_episodes
        fixed = FixedEpisodes(self.test_bank, p.ways, p.shots, p.test_queries or p.queries,
                              seed=self.seed + TEST_SEED_OFFSET, count=episodes, dtype=self.learner.dtype)
        result = meta_test(self.learner, fixed, episodes, self.executor.test_batch(p.test_batch), attacks=attacks,
                           pixel_space=self.test_bank.pixel_space(self.learner.dtype), progress=progress,
                           sample_chunk=p.test_sample_chunk, seed=self.seed + TEST_SEED_OFFSET,
                           executor=self.executor)
        return {**result, "episodes": fixed.describe()}


def build_experiment(protocol: Protocol | str, learner: str = "maml", regularizer: str = "none",
                     hyper: dict[str, Any] | None = None, seed: int = 0, device: str = "cpu",
                     data_root: str | Path | None = None,
                     dtype: torch.dtype = torch.float32) -> Experiment:
    """Load the data and build the meta-learner for a protocol (a name uses the paper preset)."""
    check_device(device)
    if torch.device(device).type == "cpu":
        retain_freed_memory()
    p = load_protocol(protocol) if isinstance(protocol, str) else protocol
    spec = BackboneSpec(p.in_channels, p.image_size, p.channels, p.ways, bn_mode=p.bn_mode)
    config = LearnerConfig(algorithm=learner, inner_lr=p.inner_lr, inner_steps=p.inner_steps,
                           first_order=p.first_order, mc_train=p.mc_train, mc_test=p.mc_test,
                           execution=p.execution, alpha_init=p.metasgd_alpha_init,
                           alpha_range=tuple(p.metasgd_alpha_range))
    meta_learner = MetaLearner(spec, build_regularizer(regularizer, hyper), config, seed=seed, device=device,
                               dtype=dtype)
    banks = [load_bank(p.dataset, split, data_root, device=device,
                       drop_cross_split_duplicates=p.drop_cross_split_duplicates, **p.data_options)
             for split in (p.train_split, p.test_split)]
    meta_learner.reg.bind_pixels(banks[0].pixel_space(dtype))
    return Experiment(p, meta_learner, *banks, seed, executor_for(meta_learner, p.cuda_graph))
