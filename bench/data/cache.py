"""On-disk cache of decoded uint8 arrays: <name>-<key>.npy plus a JSON index (class names, shape, SHA-256 of the
array's bytes), written atomically; the checksum is verified at every load."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np

from bench.util.atomic import atomic_path
from bench.util.notice import warn

Built = tuple[np.ndarray, list[str]]


def array_digest(images: np.ndarray) -> str:
    """SHA-256 of the array's bytes in C order (about 1.6 GB/s on one core with SHA extensions)."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(images)).cast("B")).hexdigest()


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
            warn(f"cache {array_path} is corrupt or outdated ({err}); rebuilding it")
    images, names = build()
    _store(cache, name, stem, key, images, names)
    return images, names


def _load(meta_path: Path, array_path: Path, key: str) -> Built:
    meta = json.loads(meta_path.read_text())
    if "sha256" not in meta:
        raise ValueError("its index has no checksum: written by an older version")
    images = np.load(array_path, allow_pickle=False)
    if meta["key"] != key or list(images.shape) != meta["shape"] or images.dtype != np.uint8:
        raise ValueError(f"holds {images.dtype} {list(images.shape)}, its index says uint8 {meta['shape']}")
    if len(meta["class_names"]) != images.shape[0]:
        raise ValueError("class names do not match the array")
    if array_digest(images) != meta["sha256"]:
        raise ValueError("its content does not match the checksum written with it")
    return images, list(meta["class_names"])


def _store(cache: Path, name: str, stem: Path, key: str, images: np.ndarray, names: list[str]) -> None:
    """Write the array, then its index (the index is the commit mark), each by temp file + os.replace."""
    meta = {"key": key, "shape": list(images.shape), "class_names": names, "sha256": array_digest(images)}
    try:
        with atomic_path(stem.with_suffix(".npy")) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, images, allow_pickle=False)
        with atomic_path(stem.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(meta))
    except OSError as err:
        warn(f"could not write the cache under {cache} ({err}); set $META_DROPOUT_CACHE to a writable folder "
             "to avoid decoding again")
        return
    for stale in cache.glob(f"{name}-*"):
        old_key = stale.stem[len(name) + 1:]
        if stale.suffix in (".npy", ".json") and len(old_key) == 24 and stale.stem != stem.name:
            stale.unlink(missing_ok=True)
