"""Episode samplers: a meta-batch of N-way K-shot Q-query tasks as index operations on the bank's device.
Meta-training draws on the device; meta-test episodes are fixed in advance on the CPU (shared by every cell)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from bench.data.bank import ImageBank
from bench.util.errors import UserError


@dataclass
class Episodes:
    """A meta-batch: support [B, N*K, C, H, W] / [B, N*K], query [B, N*Q, C, H, W] / [B, N*Q]."""

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor


def _check_shape(bank: ImageBank, ways: int, shots: int, queries: int) -> None:
    if ways > bank.n_classes:
        raise UserError(f"{ways}-way tasks need {ways} classes but the split has {bank.n_classes}; "
                        "lower the ways or use a larger split")
    if shots + queries > bank.min_images_per_class:
        raise UserError(f"{shots} shots + {queries} queries need {shots + queries} images per class "
                        f"but the split has {bank.min_images_per_class}; lower shots or queries")


def gather(bank: ImageBank, classes: torch.Tensor, picks: torch.Tensor, shots: int,
           dtype: torch.dtype) -> Episodes:
    """Episodes from indices: classes [B, N] (position = label), picks [B, N, K+Q] (first K are support)."""
    batch, n = classes.shape
    kq = picks.shape[2]
    images = bank.images[classes.unsqueeze(-1), picks]                 # [B, N, K+Q, C, H, W] uint8
    labels = torch.arange(n, device=bank.device).view(1, n, 1).expand(batch, n, kq)
    x = bank.to_float(images, dtype)
    shape = bank.image_shape
    return Episodes(
        x_support=x[:, :, :shots].reshape(batch, n * shots, *shape),
        y_support=labels[:, :, :shots].reshape(batch, n * shots),
        x_query=x[:, :, shots:].reshape(batch, n * (kq - shots), *shape),
        y_query=labels[:, :, shots:].reshape(batch, n * (kq - shots)),
    )


class EpisodeSampler:
    """Draws tasks with distinct classes, distinct images per class and a random label order per task."""

    def __init__(self, bank: ImageBank, ways: int, shots: int, queries: int, seed: int,
                 dtype: torch.dtype = torch.float32):
        _check_shape(bank, ways, shots, queries)
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
        classes = self.class_indices(batch)
        scores = torch.rand(batch, n, self.bank.n_per_class, generator=self.generator, device=self.bank.device)
        if self.bank.excluded is not None:                                 # excluded images sort last
            scores = scores.masked_fill(self.bank.excluded[classes], 2.0)
        picks = scores.argsort(dim=2)[:, :, : k + q]                       # [B, N, K+Q] distinct images
        return gather(self.bank, classes, picks, k, self.dtype)

    def state(self) -> torch.Tensor:
        """The generator state, for checkpoints."""
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        """Restore a state from state()."""
        self.generator.set_state(state)


class FixedEpisodes:
    """The meta-test episodes of a (split, ways, shots, queries, seed): drawn once, episode by episode, from a CPU
    generator, so episode i is the same whatever the batch size, the device or the number of episodes asked;
    sample(B) hands out the next B in order (images gathered on the bank's device)."""

    def __init__(self, bank: ImageBank, ways: int, shots: int, queries: int, seed: int, count: int,
                 dtype: torch.dtype = torch.float32):
        _check_shape(bank, ways, shots, queries)
        self.bank, self.shots, self.dtype, self.seed = bank, shots, dtype, seed
        generator = torch.Generator().manual_seed(seed)
        classes, picks = [], []
        for _ in range(count):
            classes.append(torch.rand(bank.n_classes, generator=generator).argsort()[:ways])
            scores = torch.rand(ways, bank.n_per_class, generator=generator)
            if bank.excluded is not None:                                  # excluded images sort last
                scores = scores.masked_fill(bank.excluded.cpu()[classes[-1]], 2.0)
            picks.append(scores.argsort(dim=1)[:, : shots + queries])
        self.classes = torch.stack(classes) if count else torch.zeros(0, ways, dtype=torch.long)
        self.picks = torch.stack(picks) if count else torch.zeros(0, ways, shots + queries, dtype=torch.long)
        self.cursor = 0

    def sample(self, batch: int) -> Episodes:
        """The next `batch` episodes of the fixed sequence."""
        end = self.cursor + batch
        if end > len(self.classes):
            raise ValueError(f"only {len(self.classes)} fixed episodes were drawn; asked for episode {end}")
        sl = slice(self.cursor, end)
        self.cursor = end
        dev = self.bank.device
        return gather(self.bank, self.classes[sl].to(dev), self.picks[sl].to(dev), self.shots, self.dtype)

    def fingerprint(self) -> str:
        """sha256 over the split's class names, the class indices [E, N] and the image indices [E, N, K+Q]:
        equal fingerprints mean identical episodes (same images, same labels, same support/query roles)."""
        digest = hashlib.sha256()
        digest.update("\n".join(self.bank.class_names).encode())
        digest.update(repr((tuple(self.classes.shape), tuple(self.picks.shape), self.shots)).encode())
        digest.update(self.classes.numpy().astype("<i8").tobytes())
        digest.update(self.picks.numpy().astype("<i8").tobytes())
        return digest.hexdigest()

    def episode_ids(self) -> list[str]:
        """Per episode, 12 hex digits of a sha256 over its classes' names and its image indices (support and query
        roles): the same id means the same episode, so that paired results can be matched episode by episode."""
        out = []
        for classes, picks in zip(self.classes.tolist(), self.picks.numpy().astype("<i8")):
            digest = hashlib.sha256("\n".join(self.bank.class_names[c] for c in classes).encode())
            digest.update(repr(self.shots).encode())
            digest.update(picks.tobytes())
            out.append(digest.hexdigest()[:12])
        return out

    def describe(self) -> dict:
        """What the cell JSON records about its test episodes: fingerprint, seed, count and each episode's id."""
        return {"fingerprint": self.fingerprint(), "seed": self.seed, "count": len(self.classes),
                "drawn": "per episode from a CPU torch.Generator; independent of batch size and device",
                "ids": self.episode_ids()}
