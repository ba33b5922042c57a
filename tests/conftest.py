"""Shared fixtures: the real-data root (skips with the reason when absent) and float64 helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bench.ops import kernels as ops
from bench.util.paths import DATA_ROOT_ENV
from regularizers import FILES_ENV

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):   # pytest -n N (the README's command): one torch thread per test process,
    torch.set_num_threads(1)                # so N processes share N cores instead of competing for them


def _shared_data() -> Path:
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env) if env else REPO.parent / "shared" / "data"


def _needs(what: str, folder: str, root: Path) -> str:
    """A skip reason for a fresh clone: which data, and how to point the tests at it."""
    given = f"; {DATA_ROOT_ENV}={root} has none" if os.environ.get(DATA_ROOT_ENV) else ""
    return f"needs the real {what} data: set {DATA_ROOT_ENV} to a folder holding {folder} (see docs/data.md){given}"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root ($META_DROPOUT_DATA, else the maintainers' shared/data beside the clone); skips the test
    when it holds neither dataset."""
    root = _shared_data()
    if not (root / "omniglot").is_dir() and not (root / "mini_imagenet").is_dir():
        pytest.skip(_needs("Omniglot or miniImageNet", "omniglot/ or mini_imagenet/", root))
    return root


@pytest.fixture(scope="session")
def omniglot_root(data_root: Path) -> Path:
    """The data root, skipping when Omniglot is absent from it."""
    if not (data_root / "omniglot").is_dir():
        pytest.skip(_needs("Omniglot", "omniglot/", data_root))
    return data_root


@pytest.fixture(scope="session")
def mini_imagenet_root(data_root: Path) -> Path:
    """The data root, skipping when miniImageNet is absent from it."""
    if not (data_root / "mini_imagenet").is_dir():
        pytest.skip(_needs("miniImageNet", "mini_imagenet/", data_root))
    return data_root


@pytest.fixture
def cpu_kernels_at_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU kernels of bench/ops/kernels.py also for the tests' small inputs (in use they start at
    ops.FAST_MIN_POSITIONS), so that the gradient checks cover them."""
    monkeypatch.setattr(ops, "FAST_MIN_POSITIONS", 0)


@pytest.fixture(autouse=True)
def no_regularizer_file_leaks_to_later_tests():
    """A test that loads a researcher's regularizer file (which exports it for task processes) leaves the
    environment as it found it; otherwise later tests' subprocesses would load that file too."""
    before = os.environ.get(FILES_ENV)
    yield
    assert os.environ.get(FILES_ENV) == before, f"{FILES_ENV} left set to {os.environ.get(FILES_ENV)!r}"
