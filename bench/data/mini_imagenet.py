"""miniImageNet (Ravi & Larochelle split, 64/16/20 classes x 600 images, 84x84 RGB) from the formats users have.

Formats, under <root>/mini_imagenet/ ("auto" takes the first present, in this order):
  "zip":     mini_imagenet_84.zip with miniImagenet/{train,val,test}/<wnid>/<file>.jpg (MAML's layout), read in place;
  "folders": the same layout extracted, {train,val,test}/<wnid>/*.jpg directly or under miniImagenet/;
  "csv":     Ravi's flat images/ plus {train,val,test}.csv (filename,label), LANCZOS-resized to 84x84 when needed;
  "pickle":  mini-imagenet-cache-{train,val,test}.pkl, dicts with image_data uint8 [N, 84, 84, 3] and class_dict.
Classes are sorted by wnid and images by file name (pickle: in class_dict order).
"""
from __future__ import annotations

import csv
import hashlib
import json
import pickle
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench.data.bank import ImageBank
from bench.data.cache import cached_arrays
from bench.util.atomic import write_text_atomic
from bench.data.decode import decode_groups, rgb84
from bench.data.duplicates import apply_report, build_report, digest, group_identical
from bench.data.tree import FileTree
from bench.util.errors import UserError
from bench.util.paths import cache_dir

SPLITS = ("train", "val", "test")
CLASSES = {"train": 64, "val": 16, "test": 20}
PER_CLASS = 600
FORMATS = ("zip", "folders", "csv", "pickle")
ZIP_NAME = "mini_imagenet_84.zip"
NORMALIZATIONS = {  # per-channel RGB mean and std on 0-255
    "train": ((120.11, 114.71, 102.89), (70.25, 68.21, 71.94)),    # the train split of these files (data README)
    "pickle": ((120.40, 115.59, 104.54), (70.68, 68.28, 72.54)),   # the pickle release, used by many papers
    "none": ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),              # floats are x / 255
}
_DECODER_VERSION = "rgb84-lanczos-v1"


def _sources(folder: Path, split: str) -> dict[str, Path]:
    """The formats present for the split, in priority order, with the path each is read from."""
    found = {}
    if (folder / ZIP_NAME).is_file():
        found["zip"] = folder / ZIP_NAME
    for top in (folder, folder / "miniImagenet"):
        if (top / split).is_dir() and "folders" not in found:
            found["folders"] = top / split
    if (folder / "images").is_dir() and (folder / f"{split}.csv").is_file():
        found["csv"] = folder / f"{split}.csv"
    if (folder / f"mini-imagenet-cache-{split}.pkl").is_file():
        found["pickle"] = folder / f"mini-imagenet-cache-{split}.pkl"
    return found


def _check_counts(groups: dict[str, list], split: str, source: Path, classes: int, per_class: int) -> None:
    counts = sorted({len(v) for v in groups.values()})
    if len(groups) != classes or counts != [per_class]:
        raise UserError(f"miniImageNet {split} in {source}: expected {classes} classes x {per_class} images, found "
                        f"{len(groups)} classes with {counts} images; the copy is incomplete or not the Ravi & "
                        "Larochelle split: replace it")


def _folder_groups(tree: FileTree, split: str) -> dict[str, list[str]]:
    """{wnid: sorted image names} from a zip (entries .../<split>/<wnid>/<file>) or a split folder (<wnid>/<file>)."""
    groups: dict[str, list[str]] = defaultdict(list)
    image = re.compile(rf"(?:^|/){split}/([^/]+)/[^/]+\.(?:jpe?g|png)$", re.IGNORECASE)
    for name in tree.names:
        match = image.search(f"{split}/{name}" if tree.path.is_dir() else name)
        if match:
            groups[match.group(1)].append(name)
    return {wnid: sorted(names) for wnid, names in sorted(groups.items())}


def _csv_groups(csv_path: Path) -> dict[str, list[str]]:
    """{label: sorted filenames} from a Ravi split file (header filename,label)."""
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        groups: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            groups[row["label"]].append(row["filename"])
    except (KeyError, csv.Error, UnicodeDecodeError) as err:
        raise UserError(f"{csv_path} is not a Ravi split file with a filename,label header ({err})") from err
    return {label: sorted(names) for label, names in sorted(groups.items())}


# What a miniImageNet pickle cache holds besides dicts, lists, strings and numbers: numpy arrays, dtypes and scalars.
PICKLE_GLOBALS = frozenset((module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
                           for name in ("_reconstruct", "scalar")) | {("numpy", "ndarray"), ("numpy", "dtype")}


class _DataUnpickler(pickle.Unpickler):
    """An unpickler that builds only what the cache files contain: a pickle naming any other callable (which it
    would call: a crafted file runs code that way) is refused before anything is built."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which no miniImageNet cache holds")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> tuple[np.ndarray, dict[str, list[int]]]:
    """(image_data uint8 [N, 84, 84, 3], class_dict {wnid: indices}) of a pickle cache, read by an unpickler that
    builds numpy arrays and plain containers only, and checked for its shape."""
    try:
        with open(path, "rb") as f:
            data = _DataUnpickler(f).load()
        images, class_dict = np.asarray(data["image_data"]), data["class_dict"]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError, ValueError) as err:
        raise UserError(f"{path} is not a miniImageNet pickle cache (a dict with image_data and class_dict): "
                        f"{err}; refused unread beyond that; replace it, or use the folders or csv format") from err
    if images.dtype != np.uint8 or images.shape[1:] != (84, 84, 3):
        raise UserError(f"{path}: image_data is {images.dtype} {images.shape}, expected uint8 [N, 84, 84, 3]")
    return images, class_dict


def _read_pickle(path: Path, split: str, classes: int, per_class: int) -> tuple[np.ndarray, list[str]]:
    images, class_dict = _load_pickle(path)
    _check_counts(class_dict, split, path, classes, per_class)
    names = sorted(class_dict)
    return np.stack([images[np.asarray(class_dict[w])] for w in names]).transpose(0, 1, 4, 2, 3).copy(), names


def _source(folder: Path, split: str, format: str) -> tuple[str, Path]:
    """(format, path) the split is read from: the given format, or the first present in priority order."""
    found = _sources(folder, split)
    if format != "auto":
        found = {format: found[format]} if format in found else {}
    if not found:
        raise UserError(f"no miniImageNet {split} data ({format}) under {folder}: expected {ZIP_NAME}, or "
                        f"{split}/<wnid>/*.jpg folders, or images/ + {split}.csv, or mini-imagenet-cache-{split}.pkl "
                        "(see the data README for where to get them); pass --data-root or set $META_DROPOUT_DATA")
    return next(iter(found.items()))


def formats_present(root: Path, split: str) -> list[str]:
    """The formats of the split found under <root>/mini_imagenet, in priority order (nothing is read)."""
    return list(_sources(Path(root) / "mini_imagenet", split))


def mini_imagenet_arrays(root: Path, split: str, format: str = "auto", classes: int | None = None,
                         per_class: int = PER_CLASS) -> tuple[np.ndarray, list[str]]:
    """The split as uint8 [classes, per_class, 3, 84, 84] and its wnids, decoded once into the cache."""
    if split not in SPLITS:
        raise UserError(f"unknown miniImageNet split {split!r}; choose one of {', '.join(SPLITS)}")
    if format not in ("auto", *FORMATS):
        raise UserError(f"unknown miniImageNet format {format!r}; choose auto or one of {', '.join(FORMATS)}")
    classes = CLASSES[split] if classes is None else classes
    folder = Path(root) / "mini_imagenet"
    kind, path = _source(folder, split, format)
    if kind == "pickle":
        key = FileTree(path).fingerprint()
        return cached_arrays(cache_dir(), f"mini_imagenet-{split}", f"pickle-{classes}x{per_class}-{key}",
                             lambda: _read_pickle(path, split, classes, per_class))
    tree = FileTree(folder / "images" if kind == "csv" else path)
    source_key = tree.fingerprint()
    if kind == "csv":
        source_key += "-" + hashlib.sha256(path.read_bytes()).hexdigest()

    def build() -> tuple[np.ndarray, list[str]]:
        groups = _csv_groups(path) if kind == "csv" else _folder_groups(tree, split)
        missing = sorted({n for names in groups.values() for n in names} - set(tree.names))
        if missing:
            raise UserError(f"{len(missing)} images named in {path} are missing from {tree.path} "
                            f"(e.g. {missing[0]}); complete the images/ folder")
        _check_counts(groups, split, path, classes, per_class)
        images = decode_groups(tree, list(groups.values()), rgb84, desc=f"miniImageNet {split}")
        return images, list(groups)

    return cached_arrays(cache_dir(), f"mini_imagenet-{split}",
                         f"{kind}-{_DECODER_VERSION}-{split}-{classes}x{per_class}-{source_key}", build)


def _split_images(split: str, kind: str, path: Path) -> Iterator[tuple[str, int, bytes, str]]:
    """(wnid, index in the class, content, source name) for every image of a split: the file's bytes, or for the
    pickle format the uint8 pixels."""
    if kind == "pickle":                               # the bank's order: wnids sorted, class_dict's image order
        images, class_dict = _load_pickle(path)
        for wnid in sorted(class_dict):
            for i, index in enumerate(class_dict[wnid]):
                yield wnid, i, images[index].tobytes(), f"{path.name}[{index}]"
        return
    tree = FileTree(path.parent / "images" if kind == "csv" else path)
    groups = _csv_groups(path) if kind == "csv" else _folder_groups(tree, split)
    for wnid, names in groups.items():
        for i, name in enumerate(names):
            yield wnid, i, tree.read(name), name


def mini_imagenet_duplicates(root: Path | str, format: str = "auto") -> dict:
    """Identical images across the present splits (byte-identical files; identical pixels for pickles), computed
    once per source and cached as JSON."""
    folder = Path(root) / "mini_imagenet"
    sources = {split: _source(folder, split, format) for split in SPLITS if _sources(folder, split)}
    kind = next(iter(sources.values()))[0]
    sources = {split: _source(folder, split, kind) for split in sources}
    key = json.dumps({s: [k, FileTree(p).fingerprint()] for s, (k, p) in sources.items()}, sort_keys=True)
    cached = cache_dir() / f"mini_imagenet-duplicates-{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
    try:
        return json.loads(cached.read_text())
    except (OSError, ValueError):
        pass
    items = (((split, wnid, i), digest(content), name) for split, (k, p) in sources.items()
             for wnid, i, content, name in _split_images(split, k, p))
    check = "identical pixels (pickle)" if kind == "pickle" else "byte-identical image files"
    report = build_report("mini_imagenet", check, group_identical(items))
    try:
        write_text_atomic(cached, json.dumps(report))
    except OSError:
        pass                                     # an unwritable cache only costs recomputing
    return report


def load_mini_imagenet(root: Path | str, split: str, format: str = "auto", normalization: str = "train",
                       classes: int | None = None, per_class: int = PER_CLASS,
                       drop_cross_split_duplicates: bool = False, device: str = "cpu") -> ImageBank:
    """The split as an ImageBank [classes, 600, 3, 84, 84]; normalization: "train" (default), "pickle" or "none".
    The duplicate report is attached; with drop_cross_split_duplicates, later copies are excluded from sampling."""
    if normalization not in NORMALIZATIONS:
        raise UserError(f"unknown normalization {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
    images, names = mini_imagenet_arrays(Path(root), split, format, classes, per_class)
    mean, std = NORMALIZATIONS[normalization]
    bank = ImageBank.from_numpy(images, names, mean=tuple(m / 255 for m in mean), std=tuple(s / 255 for s in std),
                                device=device)
    apply_report(bank, mini_imagenet_duplicates(root, format), split, drop_cross_split_duplicates)
    return bank
