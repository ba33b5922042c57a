"""On-disk cache of decoded uint8 arrays: <name>-<key>.npy plus a JSON of class names, written atomically."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

Built = tuple[np.ndarray, list[str]]


def cached_arrays(cache: Path, name: str, key: str, build: Callable[[], Built]) -> Built:
    """Load the array and class names stored for (name, key); on a miss or a corrupt entry build, store and return.

    The key describes the source (fingerprints, decoder version); a different key is a different entry, and storing
    an entry removes the other keys' entries of the same name."""
    stem = cache / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"
    meta_path, array_path = stem.with_suffix(".json"), stem.with_suffix(".npy")
    if meta_path.exists():
        try:
            return _load(meta_path, array_path, key)
        except (OSError, ValueError, EOFError, KeyError, TypeError) as err:
            warnings.warn(f"cache {array_path} is corrupt ({err}); rebuilding it", RuntimeWarning, stacklevel=2)
    images, names = build()
    _store(cache, name, stem, key, images, names)
    return images, names


def _load(meta_path: Path, array_path: Path, key: str) -> Built:
    meta = json.loads(meta_path.read_text())
    images = np.load(array_path, allow_pickle=False)
    if meta["key"] != key or list(images.shape) != meta["shape"] or images.dtype != np.uint8:
        raise ValueError(f"holds {images.dtype} {list(images.shape)}, its index says uint8 {meta['shape']}")
    if len(meta["class_names"]) != images.shape[0]:
        raise ValueError("class names do not match the array")
    return images, list(meta["class_names"])


def _store(cache: Path, name: str, stem: Path, key: str, images: np.ndarray, names: list[str]) -> None:
    """Write the array, then its index (the index is the commit mark), each by temp file + os.replace."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        _atomic_write(stem.with_suffix(".npy"), lambda f: np.save(f, images, allow_pickle=False))
        meta = {"key": key, "shape": list(images.shape), "class_names": names}
        _atomic_write(stem.with_suffix(".json"), lambda f: f.write(json.dumps(meta).encode()))
    except OSError as err:
        warnings.warn(f"could not write the cache under {cache} ({err}); set $META_DROPOUT_CACHE to a "
                      "writable folder to avoid decoding again", RuntimeWarning, stacklevel=3)
        return
    for stale in cache.glob(f"{name}-*"):
        old_key = stale.stem[len(name) + 1:]
        if stale.suffix in (".npy", ".json") and len(old_key) == 24 and stale.stem != stem.name:
            stale.unlink(missing_ok=True)


def _atomic_write(path: Path, write: Callable) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
