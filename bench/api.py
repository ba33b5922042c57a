"""A few-line Python API: build a learner and its samplers for a protocol and a regularizer, meta-train,
meta-test."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.backbone import BackboneSpec
from bench.data.bank import ImageBank
from bench.devices import check_device
from bench.data.registry import load_bank
from bench.episodes import EpisodeSampler
from bench.evaluate import meta_test
from bench.learner import LearnerConfig, MetaLearner
from bench.meta_gradient import resolve_execution
from bench.protocol import Protocol, load_protocol
from bench.train import meta_train
from regularizers import build_regularizer

TEST_SEED_OFFSET = 1_000_003      # the meta-test episodes of seed s are drawn from seed s + offset


@dataclass
class Experiment:
    """A protocol x learner x regularizer x seed, with its banks, samplers and meta-learner."""

    protocol: Protocol
    learner: MetaLearner
    train_bank: ImageBank
    test_bank: ImageBank
    seed: int
    train_summary: dict[str, Any] = field(default_factory=dict)

    def train(self, checkpoint_path: Path | None = None, progress: bool = True, **kwargs: Any) -> dict:
        """Meta-train for the protocol's iterations (resuming from checkpoint_path when it exists)."""
        p = self.protocol
        sampler = EpisodeSampler(self.train_bank, p.ways, p.shots, p.queries, seed=self.seed,
                                 dtype=self.learner.dtype)
        self.train_summary = meta_train(self.learner, sampler, p.iterations, p.meta_lr, p.meta_batch,
                                        checkpoint_path=checkpoint_path, checkpoint_every=p.checkpoint_every,
                                        progress=progress, cuda_graph=p.cuda_graph, **kwargs)
        return self.train_summary

    def test(self, episodes: int | None = None, attack_epsilons: list[float] | None = None,
             progress: bool = True) -> dict:
        """Meta-test on the protocol's test split: per-episode accuracies, mean and 95% CI."""
        p = self.protocol
        sampler = EpisodeSampler(self.test_bank, p.ways, p.shots, p.queries, seed=self.seed + TEST_SEED_OFFSET,
                                 dtype=self.learner.dtype)
        return meta_test(self.learner, sampler, episodes or p.test_episodes, p.test_batch,
                         attack_epsilons=attack_epsilons, value_range=self.test_bank.value_range(),
                         progress=progress, sample_chunk=p.test_sample_chunk, seed=self.seed + TEST_SEED_OFFSET)


def build_experiment(protocol: Protocol | str, learner: str = "maml", regularizer: str = "none",
                     hyper: dict[str, Any] | None = None, seed: int = 0, device: str = "cpu",
                     data_root: str | Path | None = None,
                     dtype: torch.dtype = torch.float32) -> Experiment:
    """Load the data and build the meta-learner for a protocol (a name uses the paper preset)."""
    check_device(device)
    p = load_protocol(protocol) if isinstance(protocol, str) else protocol
    spec = BackboneSpec(p.in_channels, p.image_size, p.channels, p.ways, bn_mode=p.bn_mode)
    config = LearnerConfig(algorithm=learner, inner_lr=p.inner_lr, inner_steps=p.inner_steps,
                           first_order=p.first_order, mc_train=p.mc_train, mc_test=p.mc_test,
                           execution=resolve_execution(p.execution, device))
    meta_learner = MetaLearner(spec, build_regularizer(regularizer, hyper), config, seed=seed, device=device,
                               dtype=dtype)
    train_bank = load_bank(p.dataset, p.train_split, data_root, device=device, **p.data_options)
    test_bank = load_bank(p.dataset, p.test_split, data_root, device=device, **p.data_options)
    return Experiment(p, meta_learner, train_bank, test_bank, seed)
