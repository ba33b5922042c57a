"""One entry point for every dataset: load_bank(dataset, split, root, device, **options) -> ImageBank."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

import numpy as np

from bench.data.bank import ImageBank
from bench.data.mini_imagenet import (CLASSES as MINI_CLASSES, PER_CLASS as MINI_PER_CLASS, SPLITS as MINI_SPLITS,
                                      ZIP_NAME, formats_present, load_mini_imagenet)
from bench.data.omniglot import (DRAWERS, PARTS as OMNIGLOT_PARTS, SPLITS as OMNIGLOT_SPLITS, load_omniglot,
                                 split_classes)
from bench.data.synthetic import synthetic_bank
from bench.util.errors import UserError
from bench.util.paths import data_root

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


# Names found directly inside a dataset's own folder: a data root holding them is one level too deep.
_INSIDE = {"omniglot": [f"{part}{ext}" for part in OMNIGLOT_PARTS for ext in (".zip", "")],
           "mini_imagenet": [ZIP_NAME, "miniImagenet", "images", "train.csv", "mini-imagenet-cache-train.pkl"]}


def _too_deep(root: Path) -> str:
    """'; did you mean its parent ...?' when root looks like a dataset's own folder, else ''."""
    for dataset, names in _INSIDE.items():
        if root.name == dataset or any((root / name).exists() for name in names):
            return f"; {root} looks like the {dataset} folder itself: did you mean its parent {root.parent}?"
    return ""


def check_data(dataset: str, splits: tuple[str, ...], root: Path | str | None = None) -> None:
    """Check, without reading any image, that the data root holds what the splits of `dataset` need; a missing
    Omniglot archive is fine (it is downloaded into <root>/omniglot), a missing root never is."""
    if dataset not in _LOADERS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    for split in splits:
        if split not in _LOADERS[dataset][1]:
            raise UserError(f"{dataset} has no split {split!r}; choose one of {', '.join(_LOADERS[dataset][1])}")
    if dataset == "synthetic":
        return
    path = data_root(root)
    where = "give --data-root (or $META_DROPOUT_DATA) the folder that holds omniglot/ and mini_imagenet/"
    if not path.is_dir():
        raise UserError(f"data root {path} does not exist{_too_deep(path) or '; ' + where}")
    if not (path / dataset).is_dir() and _too_deep(path):
        raise UserError(f"data root {path} has no {dataset}/ folder{_too_deep(path)}")
    if dataset == "mini_imagenet":
        missing = [split for split in splits if not formats_present(path, split)]
        if missing:
            raise UserError(f"no miniImageNet {'/'.join(missing)} data under {path / dataset}: expected {ZIP_NAME}, "
                            "<split>/<wnid>/*.jpg folders, images/ + <split>.csv or mini-imagenet-cache-<split>.pkl; "
                            f"{where}")


def load_bank(dataset: str, split: str, root: Path | str | None = None, device: str = "cpu",
              **options) -> ImageBank:
    """Load a split of a dataset as an ImageBank on the device; options go to the dataset's loader."""
    check_data(dataset, (split,), root)
    loader, splits = _LOADERS[dataset]
    accepted = [p for p in inspect.signature(loader).parameters if p not in ("root", "split", "device")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"unknown {dataset} option(s) {', '.join(unknown)}; it accepts {', '.join(accepted)}")
    return loader(data_root(root), split, device=device, **options)


def split_shape(dataset: str, split: str, options: dict) -> dict[str, int]:
    """What a split offers, without reading an image: classes, images per class, channels and image size (as the
    loader with these options would build it)."""
    if dataset == "omniglot":
        return {"classes": split_classes(split, options.get("split_rule", "vinyals")), "per_class": DRAWERS,
                "channels": 1, "image_size": 28}
    if dataset == "mini_imagenet":
        return {"classes": options.get("classes") or MINI_CLASSES[split],
                "per_class": options.get("per_class", MINI_PER_CLASS), "channels": 3, "image_size": 84}
    shape = options.get("image_shape", (1, 28, 28))
    return {"classes": options.get("n_classes", 64), "per_class": options.get("n_per_class", 20),
            "channels": shape[0], "image_size": shape[-1]}
