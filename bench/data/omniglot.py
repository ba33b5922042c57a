"""Omniglot from the official archives: MAML's 28x28 images, the 1200/423 character split, 4 rotations per character.

Split rules. "vinyals" (default): sort the 1623 characters by (background set first, alphabet, character), permute
them with numpy's default_rng(0) and take the first 1200 as meta-train, the other 423 as meta-test; the rule depends
only on the character names, never on file-system order. "lake": images_background is meta-train (964 characters),
images_evaluation is meta-test (659). Every character gives four classes (np.rot90 by 0/90/180/270 degrees), all on
the side of their character.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.data import download
from bench.data.bank import ImageBank
from bench.data.cache import cached_arrays
from bench.data.decode import omniglot_png, decode_groups
from bench.data.duplicates import apply_report, build_report, digest, group_identical
from bench.data.tree import FileTree
from bench.util.errors import UserError
from bench.util.paths import cache_dir

PARTS = {"images_background": (30, 964), "images_evaluation": (20, 659)}   # alphabets, characters
OFFICIAL_MD5 = {"images_background": "68d2efa1b9178cc56df9314c21c6e718",
                "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811"}
URL = "https://github.com/brendenlake/omniglot/raw/master/python/{}.zip"
DRAWERS = 20
ROTATIONS = (0, 90, 180, 270)
SPLITS = ("train", "test")
SPLIT_RULES = ("vinyals", "lake")
VINYALS_TRAIN = 1200
VINYALS_SEED = 0
_DECODER_VERSION = "maml-floor-28-v1"
_DRAWER = re.compile(r"_(\d+)\.png$")
_REPORTS: dict[tuple, dict] = {}


def archive_tree(folder: Path, part: str, download_missing: bool = True) -> FileTree:
    """The part's zip (or its extracted folder) under <root>/omniglot, downloaded when absent and allowed."""
    zip_path, tree_path = folder / f"{part}.zip", folder / part
    if zip_path.is_file():
        return FileTree(zip_path)
    if tree_path.is_dir():
        return FileTree(tree_path)
    if not download_missing:
        raise UserError(f"{zip_path} is missing: put the official {part}.zip (or its extracted folder) there; "
                        f"get it from {URL.format(part)}")
    return FileTree(download.fetch(URL.format(part), zip_path, OFFICIAL_MD5[part]))


def list_characters(tree: FileTree, part: str) -> dict[tuple[str, str], list[str]]:
    """{(alphabet, character): its PNG names sorted by drawer}, after checking the part's structure and counts."""
    chars: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name in tree.names:
        parts = name.split("/")
        if name.endswith(".png") and len(parts) >= 3:
            chars[(parts[-3], parts[-2])].append(name)
    n_alphabets, n_chars = PARTS[part]
    found_alphabets = len({a for a, _ in chars})
    bad = sorted(f"{a}/{c}" for (a, c), names in chars.items() if len(names) != DRAWERS)
    if found_alphabets != n_alphabets or len(chars) != n_chars or bad:
        detail = f"; {len(bad)} characters without {DRAWERS} PNGs (e.g. {bad[0]})" if bad else ""
        raise UserError(f"{tree.path} does not look like Omniglot's {part}: expected {n_alphabets} alphabets and "
                        f"{n_chars} characters with {DRAWERS} PNGs each, found {found_alphabets} alphabets and "
                        f"{len(chars)} characters{detail}; replace it with the official {URL.format(part)}")
    return {key: sorted(names, key=_drawer_key) for key, names in sorted(chars.items())}


def _drawer_key(name: str) -> tuple[int, str]:
    match = _DRAWER.search(name)
    return (int(match.group(1)) if match else 0, name)


def omniglot_characters(root: Path, download_missing: bool = True) -> tuple[np.ndarray, list[str]]:
    """All 1623 characters as uint8 [1623, 20, 28, 28] (ink 255), named "<part>/<alphabet>/<character>", cached."""
    folder = Path(root) / "omniglot"
    if not Path(root).is_dir():
        raise UserError(f"data root {root} does not exist: pass --data-root or set $META_DROPOUT_DATA to a folder "
                        "with omniglot/images_background.zip and omniglot/images_evaluation.zip (official "
                        f"files from {URL.format('<name>')}; missing ones are downloaded)")
    trees = {part: archive_tree(folder, part, download_missing) for part in PARTS}
    key = "-".join([_DECODER_VERSION] + [tree.fingerprint() for tree in trees.values()])

    def build() -> tuple[np.ndarray, list[str]]:
        arrays, names = [], []
        for part, tree in trees.items():
            chars = list_characters(tree, part)
            arrays.append(decode_groups(tree, list(chars.values()), omniglot_png, desc=f"Omniglot {part}"))
            names += [f"{part}/{alphabet}/{character}" for alphabet, character in chars]
        return np.concatenate(arrays), names

    return cached_arrays(cache_dir(), "omniglot", key, build)


def split_classes(split: str, rule: str = "vinyals") -> int:
    """How many classes (characters x rotations) a split holds, from the archives' declared contents."""
    background, total = PARTS["images_background"][1], sum(chars for _, chars in PARTS.values())
    train = background if rule == "lake" else VINYALS_TRAIN
    return (train if split == "train" else total - train) * len(ROTATIONS)


def split_characters(names: list[str], split: str, rule: str = "vinyals") -> list[int]:
    """Indices into names ("<part>/<alphabet>/<character>") of the split's characters, in sorted name order."""
    if rule not in SPLIT_RULES:
        raise UserError(f"unknown Omniglot split_rule {rule!r}; choose one of {', '.join(SPLIT_RULES)}")
    if split not in SPLITS:
        raise UserError(f"unknown Omniglot split {split!r}; choose one of {', '.join(SPLITS)}")
    order = sorted(range(len(names)), key=lambda i: (not names[i].startswith("images_background/"), names[i]))
    if rule == "lake":
        train = [i for i in order if names[i].startswith("images_background/")]
    else:
        train = [order[j] for j in np.random.default_rng(VINYALS_SEED).permutation(len(order))[:VINYALS_TRAIN]]
    chosen = set(train) if split == "train" else set(order) - set(train)
    return [i for i in order if i in chosen]


def _class_name(name: str, angle: int) -> str:
    return f"{name.split('/', 1)[1]}/rot{angle}"


def omniglot_duplicates(chars: np.ndarray, names: list[str], split_rule: str = "vinyals") -> dict:
    """Identical 28x28 images between classes (characters x rotations) of both splits of the rule; a source image
    is a (character, drawer), so one collision between two characters shows in all four rotations."""
    side = {i: split for split in SPLITS for i in split_characters(names, split, split_rule)}

    def items():
        for i, name in enumerate(names):
            for k, angle in enumerate(ROTATIONS):
                rotated = np.ascontiguousarray(np.rot90(chars[i], k, axes=(1, 2)))
                for d in range(rotated.shape[0]):
                    yield (side[i], _class_name(name, angle), d), digest(rotated[d].tobytes()), f"{name}[{d}]"

    return build_report("omniglot", f"identical 28x28 images, split rule {split_rule}", group_identical(items()))


def load_omniglot(root: Path | str, split: str, split_rule: str = "vinyals", download_missing: bool = True,
                  drop_cross_split_duplicates: bool = False, device: str = "cpu") -> ImageBank:
    """The split as an ImageBank [4 * characters, 20, 1, 28, 28], ink 1.0 and background 0.0 as floats; its
    duplicate report attached (and the test copies of cross-split duplicates excluded when asked)."""
    chars, names = omniglot_characters(Path(root), download_missing)
    idx = split_characters(names, split, split_rule)
    chosen = chars[idx]
    rotated = np.stack([np.rot90(chosen, k, axes=(2, 3)) for k in range(len(ROTATIONS))], axis=1)
    images = rotated.reshape(-1, DRAWERS, 1, *chars.shape[2:])
    class_names = [_class_name(names[i], angle) for i in idx for angle in ROTATIONS]
    bank = ImageBank.from_numpy(images, class_names, mean=(0.0,), std=(1.0,), device=device)
    memo_key = (split_rule, digest(chars.tobytes()), tuple(names))
    if memo_key not in _REPORTS:                       # the train and test loads share one report
        _REPORTS[memo_key] = omniglot_duplicates(chars, names, split_rule)
    apply_report(bank, _REPORTS[memo_key], split, drop_cross_split_duplicates)
    return bank
