"""bench.benchmarks.sampler_speed measures every pipeline in interleaved windows (no timing assertions), and the
one-pass float conversion equals the textbook normalisation."""
from __future__ import annotations

import torch

from bench.data.registry import load_bank
from bench.benchmarks.sampler_speed import LOADER_WORKERS, measure


def test_every_pipeline_gets_a_rate():
    bank = load_bank("synthetic", "train", n_classes=12, n_per_class=8, image_shape=(3, 12, 12))
    rates = measure(bank, ways=3, shots=1, queries=2, batch=2, seconds=0.2)
    assert set(rates) == {"sampler", *(f"dataloader_w{w}" for w in LOADER_WORKERS)}
    assert all(r > 0 for r in rates.values())


def test_float_conversion_is_the_normalisation():
    bank = load_bank("synthetic", "train", n_classes=4, n_per_class=3, image_shape=(3, 5, 5))
    x = bank.images[:2]
    mean = torch.tensor(bank.mean, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(bank.std, dtype=torch.float64).view(3, 1, 1)
    expected = (x.double() / 255 - mean) / std
    torch.testing.assert_close(bank.to_float(x, torch.float64), expected, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(bank.to_float(x).double(), expected, rtol=1e-6, atol=1e-6)
