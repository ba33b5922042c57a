"""Episode sampler: a meta-batch of N-way K-shot Q-query tasks as index operations on the bank's device."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.data.bank import ImageBank
from bench.errors import UserError


@dataclass
class Episodes:
    """A meta-batch: support [B, N*K, C, H, W] / [B, N*K], query [B, N*Q, C, H, W] / [B, N*Q]."""

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor


class EpisodeSampler:
    """Draws tasks with distinct classes, distinct images per class and a random label order per task."""

    def __init__(self, bank: ImageBank, ways: int, shots: int, queries: int, seed: int,
                 dtype: torch.dtype = torch.float32):
        if ways > bank.n_classes:
            raise UserError(f"{ways}-way tasks need {ways} classes but the split has {bank.n_classes}; "
                            "lower the ways or use a larger split")
        if shots + queries > bank.n_per_class:
            raise UserError(f"{shots} shots + {queries} queries need {shots + queries} images per class "
                            f"but the split has {bank.n_per_class}; lower shots or queries")
        self.bank, self.ways, self.shots, self.queries, self.dtype = bank, ways, shots, queries, dtype
        self.generator = torch.Generator(device=bank.device)
        self.generator.manual_seed(seed)

    def class_indices(self, batch: int) -> torch.Tensor:
        """[B, N] distinct classes per task; the position in the row is the task's label."""
        scores = torch.rand(batch, self.bank.n_classes, generator=self.generator, device=self.bank.device)
        return scores.argsort(dim=1)[:, : self.ways]

    def sample(self, batch: int) -> Episodes:
        """Draw B tasks; each class gives K support and Q query images, all distinct."""
        n, k, q = self.ways, self.shots, self.queries
        dev = self.bank.device
        classes = self.class_indices(batch)
        scores = torch.rand(batch, n, self.bank.n_per_class, generator=self.generator, device=dev)
        picks = scores.argsort(dim=2)[:, :, : k + q]                       # [B, N, K+Q] distinct images
        images = self.bank.images[classes.unsqueeze(-1), picks]            # [B, N, K+Q, C, H, W] uint8
        labels = torch.arange(n, device=dev).view(1, n, 1).expand(batch, n, k + q)
        x = self.bank.to_float(images, self.dtype)
        shape = self.bank.image_shape
        return Episodes(
            x_support=x[:, :, :k].reshape(batch, n * k, *shape),
            y_support=labels[:, :, :k].reshape(batch, n * k),
            x_query=x[:, :, k:].reshape(batch, n * q, *shape),
            y_query=labels[:, :, k:].reshape(batch, n * q),
        )

    def state(self) -> torch.Tensor:
        """The generator state, for checkpoints."""
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        """Restore a state from state()."""
        self.generator.set_state(state)
