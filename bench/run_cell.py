"""The cell function shared by every backend (local processes, Ray): train with resumable checkpoints,
meta-test, write one JSON atomically: the result, or the failure with its reason."""
from __future__ import annotations

import time
import traceback

import torch

from bench.api import Experiment, build_experiment
from bench.checkpoint import CheckpointUnusable
from bench.data.bank import ImageBank
from bench.errors import UserError
from bench.failures import NonFinite
from bench.notice import warn
from bench.paths import data_root as data_root_path
from bench.protocol import Protocol
from bench.provenance import code_version, device_description, environment
from bench.results import ResultStore

HEARTBEAT_EVERY = 50      # iterations between lock touches


def run_cell(cell: dict, results_dir: str, data_root: str | None = None, device: str = "cpu",
             progress: bool = False, threads: int | None = None, retry_failed: bool = False) -> dict:
    """Run one cell unless it is done, failed before (and not retry_failed) or held by another run; returns
    {name, status, seconds[, error, owner]}. A failure is recorded in the results folder."""
    store = ResultStore(results_dir)
    name = cell["name"]
    state = store.state(cell, retry_failed)
    if state != "todo":
        return {"name": name, "status": f"{state}-before", "seconds": 0.0}
    if not store.try_lock(name):
        return {"name": name, "status": "busy", "owner": store.lock_owner(name), "seconds": 0.0}
    began = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    try:
        store.write(name, _train_and_test(cell, store, data_root, device, progress))
        return {"name": name, "status": "ran", "seconds": time.perf_counter() - began}
    except NonFinite as err:
        iteration = err.iteration if err.iteration is not None else cell["protocol"]["iterations"]
        failure = {"kind": "non_finite", "stage": err.stage, "reason": str(err), "iteration": iteration}
    except UserError as err:
        failure = {"kind": "error", "stage": None, "reason": str(err), "iteration": None}
    except Exception as err:  # noqa: BLE001 - a failed cell must not stop the sweep; the trace is kept
        failure = {"kind": "error", "stage": None, "reason": f"{type(err).__name__}: {err}", "iteration": None,
                   "trace": traceback.format_exc()}
    finally:
        store.unlock(name)
    return _record_failure(store, cell, device, failure, time.perf_counter() - began)


def _record_failure(store: ResultStore, cell: dict, device: str, failure: dict, seconds: float) -> dict:
    """Write the failure record (never over a finished result); returns the status for the sweep."""
    status = {"name": cell["name"], "status": "failed", "error": failure["reason"], "seconds": seconds}
    record = {**_identity(cell, device), "status": "failed", **failure, "timings": {"seconds": seconds}}
    try:
        store.write_failure(cell["name"], record)
    except OSError as err:
        status["error"] += f" (and the failure could not be recorded: {err.strerror})"
    return status


def _identity(cell: dict, device: str) -> dict:
    """What traces any record of the cell: its name, settings, seed, places, code version, device, versions."""
    return {"name": cell["name"],
            "config": {k: cell[k] for k in ("protocol", "learner", "regularizer", "hyper", "preset", "overrides")},
            "seed": cell["seed"], "places": cell["places"], "code_version": code_version(),
            "device": device_description(device), "environment": environment()}


def _train_and_test(cell: dict, store: ResultStore, data_root: str | None, device: str, progress: bool) -> dict:
    """The cell's result; a checkpoint that cannot be used is moved aside (one warning) and the cell restarts."""
    try:
        return _compute(cell, store, data_root, device, progress)
    except CheckpointUnusable as err:
        aside = store.set_aside(err.path)
        warn(f"{err}; moved it to {aside} and restarting {cell['name']} from scratch")
        return _compute(cell, store, data_root, device, progress)


def _compute(cell: dict, store: ResultStore, data_root: str | None, device: str, progress: bool) -> dict:
    protocol = Protocol(**cell["protocol"])
    name = cell["name"]
    experiment = build_experiment(protocol, cell["learner"], cell["regularizer"], cell["hyper"], cell["seed"],
                                  device=device, data_root=data_root)
    t0 = time.perf_counter()

    def heartbeat(iteration: int) -> None:
        if iteration % HEARTBEAT_EVERY == 0:
            store.heartbeat(name)

    training = experiment.train(store.checkpoint_path(name), progress=progress, on_iteration=heartbeat)
    _require_finite_parameters(experiment, training["iterations"])
    t1 = time.perf_counter()
    test = experiment.test(attack_epsilons=cell["attack_epsilons"] or None, progress=progress)
    t2 = time.perf_counter()
    robustness = test.pop("robustness", None)
    return {
        **_identity(cell, device), "status": "ok",
        "parameter_count": experiment.learner.parameter_count(),
        "data": {"root": str(data_root_path(data_root).resolve()), "dataset": protocol.dataset,
                 "options": protocol.data_options,
                 "train": _bank_info(protocol.train_split, experiment.train_bank),
                 "test": _bank_info(protocol.test_split, experiment.test_bank)},
        "test": test, "robustness": robustness, "training": training,
        "timings": {"train_seconds_this_run": t1 - t0, "test_seconds": t2 - t1,
                    "ms_per_iteration": 1000 * (t1 - t0) / max(1, training["iterations"] - training["resumed_from"])},
    }


def _require_finite_parameters(experiment: Experiment, iteration: int) -> None:
    """Training that ends with a NaN or infinite meta-learned tensor has failed, whatever its last loss was."""
    bad = [n for n, v in experiment.learner.named_parameters().items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFinite(f"meta-learned parameters {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} are not "
                        f"finite after iteration {iteration}; lower meta_lr or inner_lr", "train", iteration)


def _bank_info(split: str, bank: ImageBank) -> dict:
    return {"split": split, "classes": bank.n_classes, "images_per_class": bank.n_per_class,
            "first_classes": bank.class_names[:3]}
