"""One entry point for every dataset: load_bank(dataset, split, root, device, **options) -> ImageBank."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

import numpy as np

from bench.data.bank import ImageBank
from bench.data.mini_imagenet import SPLITS as MINI_SPLITS, load_mini_imagenet
from bench.data.omniglot import SPLITS as OMNIGLOT_SPLITS, load_omniglot
from bench.data.synthetic import synthetic_bank
from bench.errors import UserError
from bench.paths import data_root

SYNTHETIC_SPLITS = ("train", "val", "test")


def load_synthetic(root: Path, split: str, n_classes: int = 64, n_per_class: int = 20,
                   image_shape: tuple[int, int, int] = (1, 28, 28), seed: int = 0, noise: float = 40.0,
                   drop_cross_split_duplicates: bool = False, device: str = "cpu") -> ImageBank:
    """A synthetic split; each split draws its prototypes from its own seed, so the splits share no classes (and no
    images: there is nothing to drop)."""
    split_seed = int(np.random.SeedSequence([seed, SYNTHETIC_SPLITS.index(split)]).generate_state(1)[0])
    return synthetic_bank(n_classes, n_per_class, tuple(image_shape), split_seed, noise, device=device)


_LOADERS: dict[str, tuple[Callable[..., ImageBank], tuple[str, ...]]] = {
    "omniglot": (load_omniglot, OMNIGLOT_SPLITS),
    "mini_imagenet": (load_mini_imagenet, MINI_SPLITS),
    "synthetic": (load_synthetic, SYNTHETIC_SPLITS),
}
DATASETS = tuple(_LOADERS)


def load_bank(dataset: str, split: str, root: Path | str | None = None, device: str = "cpu",
              **options) -> ImageBank:
    """Load a split of a dataset as an ImageBank on the device; options go to the dataset's loader."""
    if dataset not in _LOADERS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    loader, splits = _LOADERS[dataset]
    if split not in splits:
        raise UserError(f"{dataset} has no split {split!r}; choose one of {', '.join(splits)}")
    accepted = [p for p in inspect.signature(loader).parameters if p not in ("root", "split", "device")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"unknown {dataset} option(s) {', '.join(unknown)}; it accepts {', '.join(accepted)}")
    return loader(data_root(root), split, device=device, **options)
