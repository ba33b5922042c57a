"""The one time estimate of a run (--dry-run, the run's first line, the no-GPU refusal). A short calibration
measures this machine as it is now (one warm-up and a few timed meta-train steps and meta-test episodes of the
cheapest and the costliest cell to run, on synthetic data of their shapes, one intra-op thread per cell as the
sweep runs them), each cell's measurement kept for a day; every cell is then scaled from it by the work of its step
and its regularizer's measured relative cost. On a CPU, cells of a protocol measured on a GPU (measurements/*/
speed.json) also get that card's time."""
from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bench.api import build_experiment
from bench.core.train import make_optimizer, outer_step
from bench.data.episodes import EpisodeSampler
from bench.store.protocol import Protocol
from bench.util.atomic import write_text_atomic
from bench.util.failures import NonFinite
from bench.util.paths import cache_dir

# Meta-train step time relative to MAML without a regularizer (README, "every regularizer": real Omniglot 5-way
# 1-shot, 32 channels, 3 inner steps, B=2, CPU); a regularizer not listed counts as 1.
REGULARIZER_COST = {"none": 1.0, "meta_dropout": 1.50, "meta_dropout_additive": 1.42,
                    "deterministic_meta_dropout": 1.27, "meta_dropout_learned_variance": 1.59,
                    "fixed_gaussian": 1.0, "independent_gaussian": 1.37, "weight_gaussian": 1.04, "mixup": 1.04,
                    "vib": 1.72, "information_dropout": 1.64, "fgsm": 1.03}
EPISODE_PER_SAMPLE = 0.15        # a meta-test episode per MC sample, in meta-train tasks (no second order; rough)
ATTACK_COST = 0.5                 # each FGSM attack size at meta-test, in clean meta-test episodes (rough)
OVERHEAD_PER_CELL = 1.0           # seconds: building the learner, loading cached data, writing the result
CALIBRATION_STEPS = 2             # timed meta-train steps (after one warm-up) per calibration cell
CALIBRATION_EPISODES = 2          # timed meta-test episodes per calibration cell
CALIBRATION_TTL = 24 * 3600       # seconds a cached calibration is trusted (the machine's load changes)
# Without a calibration (a GPU-less head sending cells to a Ray cluster): measured meta-dropout steps of
# Omniglot 20-way 1-shot, B=8, 64 channels, 5 inner steps (REFERENCE.md): 62.5 ms on one H200, 6 s on 2 CPU cores.
REFERENCE_SECONDS_PER_WORK = {"gpu": 0.0625, "cpu": 6.0}
# The GPU measurements (bench.benchmarks.speed on a lent card): meta-dropout steps and 1000-episode meta-tests of
# the paper's four protocols, one file per card.
GPU_MEASUREMENTS = Path(__file__).resolve().parents[2] / "measurements"
GPU_SHAPE = ("ways", "shots", "queries", "in_channels", "image_size", "channels", "meta_batch", "inner_steps")


def step_work(p: dict) -> float:
    """Relative work of one meta-train step of protocol p: images x pixels x channels^2 x (inner steps + 1),
    in units of the reference step (Omniglot 20-way 1-shot, B=8, 64 channels, 5 inner steps)."""
    images = p["meta_batch"] * p["ways"] * (p["shots"] + p["queries"])
    return images * p["image_size"] ** 2 * p["channels"] ** 2 * (p["inner_steps"] + 1) / (8 * 20 * 16 * 28 ** 2
                                                                                           * 64 ** 2 * 6)


def episode_work(p: dict) -> float:
    """Relative work of one meta-test episode: one task of a step with S samples, no second order."""
    return step_work(p) / p["meta_batch"] * p["mc_test"] * EPISODE_PER_SAMPLE


def relative_cost(cell: dict) -> float:
    """The cell's regularizer's step time relative to none."""
    return REGULARIZER_COST.get(cell["regularizer"], 1.0)


def meta_test_passes(cell: dict) -> float:
    """The cell's meta-test work in clean meta-tests: its attacks and its learning-curve points included."""
    p = cell["protocol"]
    attacks = 1 + ATTACK_COST * sum(len(sizes) for sizes in (cell.get("attacks") or {}).values())
    return attacks * (1 + len([i for i in p.get("eval_at", []) if i < p["iterations"]]))


@dataclass(frozen=True)
class Calibration:
    """Seconds = fixed + per_work x work, for a meta-train step and for a meta-test episode (regularizer none)."""

    step_fixed: float
    step_per_work: float
    episode_fixed: float
    episode_per_work: float
    source: str                   # "measured on this machine (<device>)" or "reference figures"

    def cell_seconds(self, cell: dict) -> float:
        """Estimated seconds of one cell: training, meta-test (with its attacks and learning-curve points),
        overhead."""
        p, cost = cell["protocol"], relative_cost(cell)
        step = cost * (self.step_fixed + self.step_per_work * step_work(p))
        episode = cost * (self.episode_fixed + self.episode_per_work * episode_work(p))
        return step * p["iterations"] + episode * p["test_episodes"] * meta_test_passes(cell) + OVERHEAD_PER_CELL


def reference_calibration(kind: str) -> Calibration:
    """The fixed reference figures ('gpu' or 'cpu'), for when nothing can be measured here."""
    seconds = REFERENCE_SECONDS_PER_WORK[kind]
    return Calibration(0.0, seconds, 0.0, seconds, "reference figures")


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(fixed, per_work) through two (work, seconds) points; proportional when their work is alike."""
    (w0, s0), (w1, s1) = sorted(points)
    if w1 > 1.5 * w0 and s1 > s0:
        per_work = (s1 - s0) / (w1 - w0)
        return s0 - per_work * w0, per_work
    return 0.0, (s0 + s1) / (w0 + w1)


def _trimmed(cell: dict) -> dict:
    """The cell on synthetic data of its shape, one task per meta-batch and at most 2 meta-test samples (the work
    model scales them back)."""
    p = cell["protocol"]
    shape = [p["in_channels"], p["image_size"], p["image_size"]]
    queries = max(p["queries"], p.get("test_queries") or p["queries"])          # meta-test may ask for more
    data = {"n_classes": 2 * p["ways"], "n_per_class": p["shots"] + queries, "image_shape": shape}
    return {**cell, "protocol": {**p, "dataset": "synthetic", "train_split": "train", "test_split": "test",
                                 "meta_batch": 1, "mc_test": min(p["mc_test"], 2), "data_options": data}}


def _measure(cell: dict, device: str, threads: int) -> tuple[float, float]:
    """(seconds per meta-train step, seconds per meta-test episode) of the cell, measured here."""
    p = Protocol(**cell["protocol"])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        experiment = build_experiment(p, cell["learner"], cell["regularizer"], cell["hyper"], 0, device=device)
        sampler = EpisodeSampler(experiment.train_bank, p.ways, p.shots, p.queries, seed=0,
                                 dtype=experiment.learner.dtype)
        optimizer = make_optimizer(experiment.learner, p.meta_lr)
        timed = []
        for _ in range(1 + CALIBRATION_STEPS):                   # the first is a warm-up
            began = time.perf_counter()
            outer_step(experiment.learner, optimizer, sampler.sample(1), experiment.executor)[0].item()
            timed.append(time.perf_counter() - began)
        began = time.perf_counter()
        try:
            experiment.test(episodes=CALIBRATION_EPISODES, progress=False)
        except NonFinite:             # a diverging cell takes as long (its one batch was computed): the run reports it
            pass
        episode = (time.perf_counter() - began) / CALIBRATION_EPISODES
    finally:
        torch.set_num_threads(before)
    return min(timed[1:]), episode


def _cache_path(cell: dict, device: str, threads: int) -> Path:
    what = [platform.node(), platform.machine(), torch.__version__, device, threads,
            [cell["protocol"], cell["learner"], cell["regularizer"], cell["hyper"]]]
    key = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return cache_dir() / "calibration" / f"{key}.json"


def _cached(path: Path) -> tuple[float, float] | None:
    """A measurement kept under a day ago, else None."""
    try:
        cached = json.loads(path.read_text())
        if time.time() - cached["measured_at"] < CALIBRATION_TTL:
            return float(cached["step"]), float(cached["episode"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def calibrate(cells: list[dict], device: str, threads: int) -> Calibration:
    """Measure this machine on the cheapest and the costliest of `cells` (a measurement under a day old is reused);
    prints one line when it measures."""
    ranked = sorted(cells, key=lambda c: relative_cost(c) * step_work(c["protocol"]))
    chosen = [_trimmed(ranked[0]), _trimmed(ranked[-1])]
    paths = [_cache_path(c, device, threads) for c in chosen]
    times = [_cached(path) for path in paths]
    if None in times:
        print(f"measuring this machine for the estimate ({device}, {threads} thread{'s' if threads > 1 else ''} per "
              f"cell): a few steps of {times.count(None)} cell{'s' if times.count(None) > 1 else ''}, kept a day",
              file=sys.stderr, flush=True)
    try:
        for index, (cell, path) in enumerate(zip(chosen, paths)):
            if times[index] is None:
                times[index] = _measure(cell, device, threads)
                try:
                    write_text_atomic(path, json.dumps({"step": times[index][0], "episode": times[index][1],
                                                        "measured_at": time.time()}))
                except OSError:
                    pass                # an unwritable cache only means measuring again next time
    except Exception as err:  # noqa: BLE001 - an estimate must never stop a run; say why it is rough
        first_line = (str(err).splitlines() or [""])[0]
        return replace(reference_calibration("gpu" if device.startswith("cuda") else "cpu"),
                       source=f"reference figures; measuring failed: {type(err).__name__}: {first_line}")
    step = _fit([(step_work(c["protocol"]), s / relative_cost(c)) for c, (s, _) in zip(chosen, times)])
    episode = _fit([(episode_work(c["protocol"]), e / relative_cost(c)) for c, (_, e) in zip(chosen, times)])
    return Calibration(*step, *episode, source=f"measured on this machine ({device})")


def sweep_seconds(cells: list[dict], calibration: Calibration, workers: int) -> float:
    """Wall-clock estimate of running the cells on `workers` parallel workers (one cell each at a time)."""
    seconds = sorted((calibration.cell_seconds(c) for c in cells), reverse=True)
    if not seconds:
        return 0.0
    return max(sum(seconds) / max(1, min(workers, len(seconds))), seconds[0])


def _gpu_measurements() -> list[tuple[str, str, dict]]:
    """(card, file relative to the repository, protocols) of every GPU speed measurement shipped with the code."""
    found = []
    for path in sorted(GPU_MEASUREMENTS.glob("*/speed.json")):
        try:
            measured = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if measured.get("device") == "cuda" and isinstance(measured.get("protocols"), dict):
            found.append((measured.get("device_name", "a GPU"), str(path.relative_to(GPU_MEASUREMENTS.parent)),
                          measured["protocols"]))
    return found


def _gpu_cell_seconds(cell: dict, protocols: dict) -> float | None:
    """A cell's seconds on a measured card: its protocol's measured meta-dropout step (graphed) and 1000-episode
    meta-test, scaled by iterations, episodes, evaluations and the regularizer's relative cost; None when the card
    was not measured on the cell's shape."""
    p = cell["protocol"]
    for entry in protocols.values():
        ran = entry.get("protocol", {})
        step = (entry.get("graph") or {}).get("ms_median")
        test = (entry.get("meta_test") or {}).get("seconds")
        if step and test and all(ran.get(k) == p.get(k) for k in GPU_SHAPE) and ran.get("mc_test") == p["mc_test"]:
            scale = relative_cost(cell) / REGULARIZER_COST["meta_dropout"]
            episodes = test / ran["test_episodes"] * p["test_episodes"] * meta_test_passes(cell)
            return scale * (step / 1000 * p["iterations"] + episodes) + OVERHEAD_PER_CELL
    return None


def gpu_estimates(cells: list[dict]) -> list[str]:
    """'<card>: about <time> (<measurement file>)' for every measured card on which every one of `cells` has its
    protocol measured; empty when none has."""
    lines = []
    for card, source, protocols in _gpu_measurements():
        seconds = [_gpu_cell_seconds(c, protocols) for c in cells]
        if cells and None not in seconds:
            lines.append(f"one {card}: about {human(sum(seconds))} (from the steps and meta-tests measured in {source})")
    return lines


@dataclass(frozen=True)
class Estimate:
    """The one estimate of a run: the calibration, the parallel workers and their description, and the device."""

    calibration: Calibration
    workers: int
    where: str
    kind: str                       # "gpu" or "cpu"

    def text(self, cells: list[dict]) -> str:
        """'about 3.2 h on 2 CPU workers, ... (calibration: ...)', and on a CPU each measured card's time."""
        text = (f"about {human(sweep_seconds(cells, self.calibration, self.workers))} on {self.where} "
                f"(calibration: {self.calibration.source})")
        return "; ".join([text] + (gpu_estimates(cells) if self.kind == "cpu" else []))


def human(seconds: float) -> str:
    """'3.2 h', '12 min' or '40 s'."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
