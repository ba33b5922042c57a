"""Omniglot loader: pixel-exact MAML 28x28, the 1200/423 split with rotations, the cache, bad input, download."""
from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest

from bench.data import download, omniglot
from bench.data.cache import cached_arrays
from bench.data.omniglot import (PARTS, archive_tree, list_characters, load_omniglot, omniglot_characters,
                                 split_characters)
from bench.util.errors import UserError
from bench.util.paths import CACHE_DIR_ENV


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decoded-array cache for the test session (the data modules share it), never the user's cache."""
    path = tmp_path_factory.getbasetemp() / "data-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_DIR_ENV, str(path))
        yield path


@pytest.fixture(scope="module")
def characters(omniglot_root: Path, cache: Path) -> tuple[np.ndarray, list[str]]:
    return omniglot_characters(omniglot_root, download_missing=False)


def test_matches_maml_reference_for_every_image(omniglot_root: Path, characters) -> None:
    chars, names = characters
    ref = np.load(omniglot_root / "omniglot" / "omniglot_28x28_maml.npz")
    position = {name.split("/", 1)[1]: i for i, name in enumerate(names)}
    order = [position[f"{a}/{c}"] for a, c in zip(ref["alphabet"][::20], ref["character"][::20])]
    assert (ref["drawer"].reshape(-1, 20) == np.arange(1, 21)).all()
    # the npz stores True = white = background; the loader stores ink = 255, background = 0
    assert np.array_equal(chars[order].reshape(-1, 28, 28), np.where(ref["images"], 0, 255).astype(np.uint8))


def test_vinyals_split(omniglot_root: Path, characters) -> None:
    train, test = (load_omniglot(omniglot_root, s, download_missing=False) for s in ("train", "test"))
    assert tuple(train.images.shape) == (4800, 20, 1, 28, 28) and tuple(test.images.shape) == (1692, 20, 1, 28, 28)
    char_of = lambda bank: {n.rsplit("/", 1)[0] for n in bank.class_names}
    assert len(char_of(train)) == 1200 and len(char_of(test)) == 423
    assert not char_of(train) & char_of(test)
    assert train.class_names[:4] == [f"{train.class_names[0].rsplit('/', 1)[0]}/rot{a}" for a in (0, 90, 180, 270)]
    rot0 = train.images[0].numpy()
    for k in range(1, 4):
        assert np.array_equal(train.images[k].numpy(), np.rot90(rot0, k, axes=(2, 3)))
    floats = train.to_float(train.images[:10])
    assert set(floats.unique().tolist()) == {0.0, 1.0}


def test_split_rule_ignores_listing_order(characters) -> None:
    _, names = characters
    shuffled = list(np.random.default_rng(1).permutation(names))
    for rule in ("vinyals", "lake"):
        for split in ("train", "test"):
            assert ([names[i] for i in split_characters(names, split, rule)]
                    == [shuffled[i] for i in split_characters(shuffled, split, rule)])


def test_lake_split(omniglot_root: Path, characters) -> None:
    train, test = (load_omniglot(omniglot_root, s, "lake", download_missing=False) for s in ("train", "test"))
    assert train.n_classes == 4 * 964 and test.n_classes == 4 * 659
    _, names = characters
    background = {n.split("/", 1)[1] for n in names if n.startswith("images_background/")}
    assert {n.rsplit("/", 1)[0] for n in train.class_names} == background


def test_cache_hit_does_not_decode(omniglot_root: Path, characters, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache holds the arrays")
    monkeypatch.setattr(omniglot, "decode_groups", no_decoding)
    chars, _ = omniglot_characters(omniglot_root, download_missing=False)
    assert np.array_equal(chars, characters[0])


def test_corrupt_cache_is_rebuilt_with_a_warning(omniglot_root: Path, characters, cache: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for path in cache.glob("omniglot-*"):
        data = path.read_bytes()
        (tmp_path / path.name).write_bytes(data[: len(data) // 2] if path.suffix == ".npy" else data)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    calls = []

    def fake_decode(tree, groups, decode, desc, workers=None):
        calls.append(desc)
        return np.zeros((len(groups), 20, 28, 28), np.uint8)
    monkeypatch.setattr(omniglot, "decode_groups", fake_decode)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        chars, _ = omniglot_characters(omniglot_root, download_missing=False)
    assert len(calls) == 2 and chars.shape == (1623, 20, 28, 28)
    assert np.array_equal(omniglot_characters(omniglot_root, download_missing=False)[0], chars)


def test_cache_survives_garbage_index(tmp_path: Path) -> None:
    build = lambda: (np.ones((2, 3), np.uint8), ["a", "b"])
    cached_arrays(tmp_path, "toy", "k", build)
    next(tmp_path.glob("toy-*.json")).write_text("{not json")
    with pytest.warns(RuntimeWarning, match="corrupt"):
        images, names = cached_arrays(tmp_path, "toy", "k", build)
    assert names == ["a", "b"] and images.shape == (2, 3)
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_root_and_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_omniglot(tmp_path / "nowhere", "train")
    with pytest.raises(UserError, match="images_background.zip"):
        load_omniglot(tmp_path, "train", download_missing=False)

    def offline(*args, **kwargs):
        raise URLError("no network")
    monkeypatch.setattr(download, "urlopen", offline)
    with pytest.raises(UserError, match="download"):
        load_omniglot(tmp_path, "train")
    assert not (tmp_path / "omniglot").exists()               # a failed download leaves no empty folder behind


def _with_evaluation(tmp_path: Path, omniglot_root: Path, background: bytes) -> Path:
    folder = tmp_path / "omniglot"
    folder.mkdir()
    (folder / "images_background.zip").write_bytes(background)
    (folder / "images_evaluation.zip").symlink_to(omniglot_root / "omniglot" / "images_evaluation.zip")
    return tmp_path


def test_foreign_zip(tmp_path: Path, omniglot_root: Path, cache: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("images_background/Latin/character01/0001_01.png", b"x")
        z.writestr("readme.txt", b"not omniglot")
    root = _with_evaluation(tmp_path, omniglot_root, buffer.getvalue())
    with pytest.raises(UserError, match="does not look like Omniglot"):
        load_omniglot(root, "train", download_missing=False)


def test_truncated_zip(tmp_path: Path, omniglot_root: Path, cache: Path) -> None:
    data = (omniglot_root / "omniglot" / "images_background.zip").read_bytes()
    root = _with_evaluation(tmp_path, omniglot_root, data[: len(data) // 3])
    with pytest.raises(UserError, match="truncated"):
        load_omniglot(root, "train", download_missing=False)


def test_download_checks_md5_of_fresh_archives(tmp_path: Path, omniglot_root: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    local = omniglot_root / "omniglot" / "images_evaluation.zip"
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return io.BytesIO(local.read_bytes())
    monkeypatch.setattr(download, "urlopen", fake_urlopen)
    folder = tmp_path / "omniglot"
    with pytest.raises(UserError, match="MD5"):   # the local copy is re-packed, so the official MD5 rejects it
        archive_tree(folder, "images_evaluation")
    assert requested == ["https://github.com/brendenlake/omniglot/raw/master/python/images_evaluation.zip"]
    assert not list(folder.iterdir())
    monkeypatch.setitem(omniglot.OFFICIAL_MD5, "images_evaluation", hashlib.md5(local.read_bytes()).hexdigest())
    tree = archive_tree(folder, "images_evaluation")
    assert tree.path == folder / "images_evaluation.zip" and [p.name for p in folder.iterdir()] == [tree.path.name]
    assert len(list_characters(tree, "images_evaluation")) == PARTS["images_evaluation"][1]
