"""Image decoding for the loaders: one file's bytes to a uint8 array, and a parallel decoder with a progress bar."""
from __future__ import annotations

import io
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from bench.data.tree import FileTree
from bench.util.errors import UserError

OMNIGLOT_SIZE = 28
OMNIGLOT_SOURCE = 105
MINI_SIZE = 84
_SERIAL_BELOW = 2000   # files; fewer than this are decoded in-process (a pool costs more than it saves)
_CHUNK = 1000          # files per task sent to a worker


def _open(data: bytes, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except UnidentifiedImageError as err:
        raise UserError(f"cannot decode image {name}: not an image file; replace the dataset files") from err
    except (OSError, ValueError) as err:
        raise UserError(f"cannot decode image {name} ({err}): the file is damaged; replace the dataset files") from err


def omniglot_png(data: bytes, name: str = "") -> np.ndarray:
    """A 105x105 Omniglot PNG to uint8 28x28 with ink 255, background 0, by MAML's floor(i*105/28) subsampling."""
    white = np.asarray(_open(data, name).convert("L")) >= 128
    if white.shape != (OMNIGLOT_SOURCE, OMNIGLOT_SOURCE):
        raise UserError(f"Omniglot image {name} is {white.shape[1]}x{white.shape[0]}, expected 105x105; "
                        "use the official images_background/images_evaluation archives")
    idx = np.arange(OMNIGLOT_SIZE) * OMNIGLOT_SOURCE // OMNIGLOT_SIZE
    return np.where(white[np.ix_(idx, idx)], 0, 255).astype(np.uint8)


def rgb84(data: bytes, name: str = "") -> np.ndarray:
    """An image to uint8 [3, 84, 84] RGB, LANCZOS-resized (as MAML's preprocessing does) when not already 84x84."""
    image = _open(data, name).convert("RGB")
    if image.size != (MINI_SIZE, MINI_SIZE):
        image = image.resize((MINI_SIZE, MINI_SIZE), resample=Image.LANCZOS)
    return np.asarray(image).transpose(2, 0, 1).copy()


_worker_tree: FileTree | None = None


def _init_worker(path: Path) -> None:
    global _worker_tree
    _worker_tree = FileTree(path)   # its own zip handle: a forked one would share the parent's file offset


def _decode_chunk(decode: Callable[[bytes, str], np.ndarray], groups: list[list[str]],
                  tree: FileTree | None = None) -> np.ndarray:
    tree = tree or _worker_tree
    return np.stack([np.stack([decode(tree.read(n), n) for n in names]) for names in groups])


def decode_groups(tree: FileTree, groups: list[list[str]], decode: Callable[[bytes, str], np.ndarray],
                  desc: str, workers: int | None = None) -> np.ndarray:
    """Decode equal-sized groups of files (one per class) to uint8 [groups, files, ...], with a tqdm bar.

    Decoding is GIL-bound, so it runs in forked worker processes on Linux (serially elsewhere or for few files),
    in chunks of about _CHUNK files."""
    total = sum(len(g) for g in groups)
    workers = workers or (min(os.cpu_count() or 1, 8) if sys.platform.startswith("linux") else 1)
    step = max(1, _CHUNK // max(len(groups[0]), 1))
    chunks = {i: groups[i:i + step] for i in range(0, len(groups), step)}
    out: np.ndarray | None = None

    def put(i: int, images: np.ndarray) -> None:
        nonlocal out
        if out is None:
            out = np.empty((len(groups), *images.shape[1:]), dtype=np.uint8)
        out[i:i + len(images)] = images
        bar.update(images.shape[0] * images.shape[1])

    with tqdm(total=total, desc=desc, unit="img", disable=None) as bar:     # None: no bar in a log (not a TTY)
        if workers == 1 or total < _SERIAL_BELOW:
            for i, chunk in chunks.items():
                put(i, _decode_chunk(decode, chunk, tree))
        else:
            context = multiprocessing.get_context("fork")   # spawn would re-run an unguarded __main__ script
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                     initargs=(tree.path,)) as pool:
                futures = {pool.submit(_decode_chunk, decode, chunk): i for i, chunk in chunks.items()}
                try:
                    for future in as_completed(futures):
                        put(futures[future], future.result())
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)   # a bad file stops the whole decode at once
                    raise
    return out
