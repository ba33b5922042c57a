"""Benchmark (not a test): episodes per second on CPU of our index-based EpisodeSampler against a per-episode torch
DataLoader pipeline over the same decoded images (the way common PyTorch few-shot libraries feed MAML).

    python -m bench.benchmarks.sampler_speed [--data-root DIR] [--out results/sampler_speed.json] [--seconds 3] [--threads 1]

The pipelines are timed in alternating short windows at a fixed thread count, with the load average recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tabulate import tabulate
from torch.utils.data import DataLoader, Dataset, Sampler

from bench.data.bank import ImageBank
from bench.data.registry import load_bank
from bench.data.episodes import EpisodeSampler
from bench.util.errors import UserError

# dataset, ways, shots, queries, meta-batch (the paper's protocols)
SETTINGS = [("omniglot", 20, 1, 15, 8), ("mini_imagenet", 5, 5, 15, 4)]
LOADER_WORKERS = (0, 2)


class DecodedImages(Dataset):
    """All images of a bank as one flat list of decoded uint8 [C, H, W] tensors with their class index."""

    def __init__(self, bank: ImageBank):
        self.images = bank.images.reshape(-1, *bank.image_shape)
        self.per_class = bank.n_per_class

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], index // self.per_class


class EpisodeIndices(Sampler):
    """Endless batch sampler: each batch is one episode's indices, N classes x (K + Q) distinct images, class-major."""

    def __init__(self, n_classes: int, per_class: int, ways: int, shots_queries: int, seed: int):
        self.n_classes, self.per_class, self.ways, self.items = n_classes, per_class, ways, shots_queries
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            classes = self.rng.choice(self.n_classes, self.ways, replace=False)
            yield [int(c) * self.per_class + int(i) for c in classes
                   for i in self.rng.choice(self.per_class, self.items, replace=False)]


def dataloader_pipeline(bank: ImageBank, ways: int, shots: int, queries: int, batch: int,
                        workers: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    """A function returning one meta-batch (x_s, y_s, x_q, y_q) from a DataLoader that yields one episode per step."""
    sampler = EpisodeIndices(bank.n_classes, bank.n_per_class, ways, shots + queries, seed=0)
    loader = iter(DataLoader(DecodedImages(bank), batch_sampler=sampler, num_workers=workers))
    labels = torch.arange(ways).view(ways, 1).expand(ways, shots + queries)

    def meta_batch() -> tuple[torch.Tensor, ...]:
        tasks = []
        for _ in range(batch):
            x, _ = next(loader)                                         # default collate: [N*(K+Q), C, H, W] uint8
            x = bank.to_float(x).view(ways, shots + queries, *bank.image_shape)
            tasks.append((x[:, :shots].flatten(0, 1), labels[:, :shots].flatten(),
                          x[:, shots:].flatten(0, 1), labels[:, shots:].flatten()))
        return tuple(torch.stack(parts) for parts in zip(*tasks))

    return meta_batch


def interleaved_rates(steps: dict[str, Callable[[], object]], batch: int, seconds: float,
                      rounds: int = 5) -> dict[str, float]:
    """Episodes per second of each pipeline (one call = one meta-batch), measured in `rounds` short windows taken
    in turn, after two warm-up calls each, so a change in the machine's load hits every pipeline alike."""
    for step in steps.values():
        step(), step()
    calls, spent = dict.fromkeys(steps, 0), dict.fromkeys(steps, 0.0)
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            while time.perf_counter() - start < seconds / rounds:
                step()
                calls[name] += 1
            spent[name] += time.perf_counter() - start
    return {name: calls[name] * batch / spent[name] for name in steps}


def measure(bank: ImageBank, ways: int, shots: int, queries: int, batch: int, seconds: float) -> dict[str, float]:
    """Episodes per second of our sampler and of the DataLoader pipeline with each worker count, interleaved."""
    sampler = EpisodeSampler(bank, ways, shots, queries, seed=0)
    steps: dict[str, Callable[[], object]] = {"sampler": lambda: sampler.sample(batch)}
    for workers in LOADER_WORKERS:
        steps[f"dataloader_w{workers}"] = dataloader_pipeline(bank, ways, shots, queries, batch, workers)
    return interleaved_rates(steps, batch, seconds)


def main(argv: list[str] | None = None) -> int:
    """Measure every setting whose data is present, print a table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None, help="folder with omniglot/ and mini_imagenet/")
    parser.add_argument("--out", default="results/sampler_speed.json", type=Path)
    parser.add_argument("--seconds", default=3.0, type=float, help="timed seconds per pipeline")
    parser.add_argument("--threads", default=1, type=int, help="intra-op threads of this process (recorded)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    try:
        for dataset, ways, shots, queries, batch in SETTINGS:
            bank = load_bank(dataset, "train", args.data_root)
            row = measure(bank, ways, shots, queries, batch, args.seconds)
            results.append({"dataset": dataset, "ways": ways, "shots": shots, "queries": queries,
                            "meta_batch": batch, "episodes_per_s": row,
                            "ratio": {k: row["sampler"] / v for k, v in row.items() if k != "sampler"}})
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    headers = ["setting", "sampler ep/s"] + [f"DataLoader w={w} ep/s" for w in LOADER_WORKERS] + \
              [f"ratio vs w={w}" for w in LOADER_WORKERS]
    print(tabulate([[f"{r['dataset']} {r['ways']}-way {r['shots']}-shot B={r['meta_batch']} Q={r['queries']}",
                     r["episodes_per_s"]["sampler"]] + [r["episodes_per_s"][f"dataloader_w{w}"] for w in LOADER_WORKERS]
                    + [r["ratio"][f"dataloader_w{w}"] for w in LOADER_WORKERS] for r in results],
                   headers=headers, floatfmt=".1f"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(),
                                    "cpu_count": os.cpu_count(), "python": platform.python_version(),
                                    "load_average": os.getloadavg(),
                                    "seconds_per_pipeline": args.seconds, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
