"""Meta-test noise that belongs to the episode: each test episode draws from its own generator, seeded by (seed,
episode index), one Monte-Carlo sample at a time in the order (inner step, sample). An episode therefore sees the
same noise whatever the test batch it is in, the sample chunk or the execution path."""
from __future__ import annotations

import numpy as np
import torch

from bench.core.backbone import BackboneSpec
from bench.core.regularizer import Regularizer


def episode_seed(seed: int, episode: int) -> int:
    """A well-mixed 63-bit seed for episode `episode` of the test run seeded by `seed`."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class EpisodeNoise:
    """A NoiseFn (inner_loop) for a batch of test episodes: (step, first, end) -> tensors [B, end - first, ...].

    It must be called once per (step, chunk), in order, as the inner loops do."""

    def __init__(self, reg: Regularizer, spec: BackboneSpec, episodes: list[int], n_support: int, seed: int,
                 device: torch.device, dtype: torch.dtype):
        self.reg, self.spec, self.n_support, self.device, self.dtype = reg, spec, n_support, device, dtype
        self.generators = [torch.Generator(device=device).manual_seed(episode_seed(seed, e)) for e in episodes]

    def _draw(self, generator: torch.Generator, count: int, example_major: bool) -> dict[str, torch.Tensor]:
        draws = [self.reg.sample_noise(self.spec, self.n_support, (1,), generator, self.device, self.dtype)
                 for _ in range(count)]
        if example_major:                               # [n * count, ...], row i * count + s: one copy
            return {name: torch.stack([d[name][0] for d in draws], dim=1).flatten(0, 1) for name in draws[0]}
        return {name: torch.cat([d[name] for d in draws]) for name in draws[0]}

    def _batch(self, first: int, end: int, example_major: bool) -> dict[str, torch.Tensor]:
        if not self.reg.draws_noise:
            return {}
        per_episode = [self._draw(g, end - first, example_major) for g in self.generators]
        if len(per_episode) == 1:                       # one episode (the CPU meta-test): no stacking copy
            return {name: v.unsqueeze(0) for name, v in per_episode[0].items()}
        return {name: torch.stack([d[name] for d in per_episode]) for name in per_episode[0]}

    def __call__(self, step: int, first: int, end: int) -> dict[str, torch.Tensor]:
        return self._batch(first, end, example_major=False)

    def example_major(self, step: int, first: int, end: int) -> dict[str, torch.Tensor]:
        """The same draws as (step, first, end), each tensor [B, n * (end - first), ...] with row i * m + s example i
        in sample first + s: the layout of the S samples as one batch (bench/execution/samples_as_batch.py)."""
        return self._batch(first, end, example_major=True)
