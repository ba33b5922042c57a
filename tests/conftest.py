"""Shared fixtures: the real-data root (skips with the reason when absent) and float64 helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.ops import kernels as ops
from bench.util.paths import DATA_ROOT_ENV

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root (../shared/data or $META_DROPOUT_DATA); skips the test when it is absent."""
    root = _shared_data()
    if not (root / "omniglot").is_dir() and not (root / "mini_imagenet").is_dir():
        pytest.skip(f"real data not found at {root} (set ${DATA_ROOT_ENV} to a folder with omniglot/ "
                    "and mini_imagenet/)")
    return root


@pytest.fixture(scope="session")
def omniglot_root(data_root: Path) -> Path:
    """The data root, skipping when Omniglot is absent from it."""
    if not (data_root / "omniglot").is_dir():
        pytest.skip(f"Omniglot not found under {data_root}")
    return data_root


@pytest.fixture(scope="session")
def mini_imagenet_root(data_root: Path) -> Path:
    """The data root, skipping when miniImageNet is absent from it."""
    if not (data_root / "mini_imagenet").is_dir():
        pytest.skip(f"miniImageNet not found under {data_root}")
    return data_root


@pytest.fixture
def cpu_kernels_at_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU kernels of bench/ops/kernels.py also for the tests' small inputs (in use they start at
    ops.FAST_MIN_POSITIONS), so that the gradient checks cover them."""
    monkeypatch.setattr(ops, "FAST_MIN_POSITIONS", 0)
