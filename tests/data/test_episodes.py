"""Episode sampler: shapes, distinct classes and images, labels, seeding, and disjoint meta-train/test on Omniglot."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data.bank import ImageBank
from bench.data.registry import load_bank
from bench.data.episodes import EpisodeSampler
from bench.util.errors import UserError
from bench.util.paths import CACHE_DIR_ENV


def id_bank(n_classes: int = 30, n_per_class: int = 25) -> ImageBank:
    """A bank whose pixels are ids: channel 0 holds the class, channel 1 the image index within the class."""
    images = np.zeros((n_classes, n_per_class, 2, 1, 1), np.uint8)
    images[:, :, 0] = np.arange(n_classes).reshape(-1, 1, 1, 1)
    images[:, :, 1] = np.arange(n_per_class).reshape(1, -1, 1, 1)
    return ImageBank.from_numpy(images, [f"c{i}" for i in range(n_classes)], mean=(0.0, 0.0), std=(1 / 255, 1 / 255))


def test_shapes_on_synthetic() -> None:
    bank = load_bank("synthetic", "train", n_classes=25, n_per_class=20, image_shape=(1, 28, 28))
    ep = EpisodeSampler(bank, ways=5, shots=2, queries=3, seed=0).sample(4)
    assert ep.x_support.shape == (4, 10, 1, 28, 28) and ep.y_support.shape == (4, 10)
    assert ep.x_query.shape == (4, 15, 1, 28, 28) and ep.y_query.shape == (4, 15)
    assert ep.x_support.dtype == torch.float32


def test_classes_images_and_labels() -> None:
    n, k, q = 5, 3, 4
    ep = EpisodeSampler(id_bank(), ways=n, shots=k, queries=q, seed=0).sample(16)
    sup, qry = ep.x_support.round().long()[..., 0, 0], ep.x_query.round().long()[..., 0, 0]   # [B, items, 2]
    for b in range(16):
        for y, (x, labels) in enumerate([(sup[b], ep.y_support[b]), (qry[b], ep.y_query[b])]):
            assert sorted(labels.tolist()) == sorted(list(range(n)) * (k if y == 0 else q))
        support_pairs = {tuple(p) for p in sup[b].tolist()}
        query_pairs = {tuple(p) for p in qry[b].tolist()}
        assert len(support_pairs) == n * k and len(query_pairs) == n * q and not support_pairs & query_pairs
        label_to_class = {}
        for x, labels in [(sup[b], ep.y_support[b]), (qry[b], ep.y_query[b])]:
            for (cls, _), label in zip(x.tolist(), labels.tolist()):
                assert label_to_class.setdefault(label, cls) == cls
        assert len(set(label_to_class.values())) == n


def test_seeding() -> None:
    bank = id_bank()
    a, b, c = (EpisodeSampler(bank, 5, 1, 2, seed=s).sample(8) for s in (7, 7, 8))
    assert torch.equal(a.x_support, b.x_support) and torch.equal(a.x_query, b.x_query)
    assert not torch.equal(a.x_support, c.x_support)


def test_impossible_tasks() -> None:
    bank = id_bank(n_classes=10, n_per_class=6)
    with pytest.raises(UserError, match="classes"):
        EpisodeSampler(bank, ways=11, shots=1, queries=1, seed=0)
    with pytest.raises(UserError, match="images per class"):
        EpisodeSampler(bank, ways=5, shots=3, queries=4, seed=0)


def test_synthetic_splits_differ() -> None:
    train, test = (load_bank("synthetic", s, n_classes=8) for s in ("train", "test"))
    assert not set(train.class_names) & set(test.class_names)
    assert not torch.equal(train.images, test.images)


def test_real_omniglot(omniglot_root: Path, tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path_factory.getbasetemp() / "data-cache"))   # shared with data tests
    train, test = (load_bank("omniglot", s, omniglot_root, download_missing=False) for s in ("train", "test"))
    assert not set(train.class_names) & set(test.class_names)
    character = lambda names: {n.rsplit("/", 1)[0] for n in names}
    assert not character(train.class_names) & character(test.class_names)
    ep = EpisodeSampler(train, ways=20, shots=1, queries=15, seed=0).sample(8)
    assert ep.x_support.shape == (8, 20, 1, 28, 28) and ep.x_query.shape == (8, 300, 1, 28, 28)
    assert ep.y_support.shape == (8, 20) and ep.y_query.shape == (8, 300)
    for b in range(8):
        images = torch.cat([ep.x_support[b], ep.x_query[b]]).flatten(1)
        assert torch.unique(images, dim=0).shape[0] >= 300   # distinct drawings (rare exact duplicates allowed)
