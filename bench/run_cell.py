"""The cell function shared by every backend (local processes, Ray): train with resumable checkpoints,
meta-test, write one JSON atomically."""
from __future__ import annotations

import time
import traceback

import torch

from bench.api import build_experiment
from bench.curves import CurveRecorder, curve_folder
from bench.data.bank import ImageBank
from bench.data.duplicates import cell_record
from bench.errors import UserError
from bench.paths import data_root as data_root_path
from bench.protocol import Protocol
from bench.provenance import code_version, device_description, environment
from bench.results import ResultStore

HEARTBEAT_EVERY = 50      # iterations between lock touches


def run_cell(cell: dict, results_dir: str, data_root: str | None = None, device: str = "cpu",
             progress: bool = False, threads: int | None = None) -> dict:
    """Run one cell unless it is done or held by another run; returns {name, status, seconds[, error]}."""
    store = ResultStore(results_dir)
    name = cell["name"]
    if store.is_done(cell):
        return {"name": name, "status": "done-before", "seconds": 0.0}
    if not store.try_lock(name):
        return {"name": name, "status": "busy", "seconds": 0.0}
    began = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    try:
        store.write(name, _compute(cell, store, data_root, device, progress))
        return {"name": name, "status": "ran", "seconds": time.perf_counter() - began}
    except UserError as err:
        return {"name": name, "status": "failed", "error": str(err), "seconds": time.perf_counter() - began}
    except Exception as err:  # noqa: BLE001 - a failed cell must not stop the sweep; the trace is kept
        return {"name": name, "status": "failed", "error": f"{type(err).__name__}: {err}",
                "trace": traceback.format_exc(), "seconds": time.perf_counter() - began}
    finally:
        store.unlock(name)


def _compute(cell: dict, store: ResultStore, data_root: str | None, device: str, progress: bool) -> dict:
    protocol = Protocol(**cell["protocol"])
    name = cell["name"]
    experiment = build_experiment(protocol, cell["learner"], cell["regularizer"], cell["hyper"], cell["seed"],
                                  device=device, data_root=data_root)
    t0 = time.perf_counter()
    curve = CurveRecorder(experiment, curve_folder(store.checkpoint_path(name)), progress)
    curve.recover(store.checkpoint_path(name))

    def on_iteration(iteration: int) -> None:
        if iteration % HEARTBEAT_EVERY == 0:
            store.heartbeat(name)
        curve.on_iteration(iteration)

    training = experiment.train(store.checkpoint_path(name), progress=progress, on_iteration=on_iteration)
    t1 = time.perf_counter()
    test = experiment.test(attacks=cell["attacks"] or None, progress=progress)
    t2 = time.perf_counter()
    test_curve = curve.finish(test)
    robustness = test.pop("robustness", None)
    return {
        "name": name, "config": {k: cell[k] for k in ("protocol", "learner", "regularizer", "hyper", "preset",
                                                      "overrides")},
        "seed": cell["seed"], "places": cell["places"], "code_version": code_version(),
        "device": device_description(device), "environment": environment(),
        "parameter_count": experiment.learner.parameter_count(),
        "data": {"root": str(data_root_path(data_root).resolve()), "dataset": protocol.dataset,
                 "options": protocol.data_options,
                 "train": _bank_info(protocol.train_split, experiment.train_bank),
                 "test": _bank_info(protocol.test_split, experiment.test_bank),
                 "duplicates": cell_record({protocol.train_split: experiment.train_bank,
                                            protocol.test_split: experiment.test_bank})},
        "test": test, "robustness": robustness, "test_curve": test_curve, "training": training,
        "timings": {"train_seconds_this_run": t1 - t0 - curve.seconds, "test_seconds": t2 - t1,
                    "curve_test_seconds_this_run": curve.seconds,
                    "ms_per_iteration": 1000 * (t1 - t0 - curve.seconds)
                    / max(1, training["iterations"] - training["resumed_from"])},
    }


def _bank_info(split: str, bank: ImageBank) -> dict:
    return {"split": split, "classes": bank.n_classes, "images_per_class": bank.n_per_class,
            "first_classes": bank.class_names[:3]}
