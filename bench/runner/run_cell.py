"""The cell function shared by every backend (local processes, Ray): train with resumable checkpoints,
meta-test, write one JSON atomically: the result, or the failure with its reason."""
from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench.execution.allocator import retain_freed_memory
from bench.api import Experiment, build_experiment
from bench.core.checkpoint import CheckpointUnusable
from bench.runner.curves import CurveRecorder, curve_folder
from bench.runner.logs import CellLogs
from bench.data.bank import ImageBank
from bench.data.duplicates import cell_record
from bench.util.errors import DiskFull, UserError
from bench.util.failures import Diverged, NonFinite
from bench.util.notice import warn
from bench.util.paths import data_root as data_root_path
from regularizers import use_regularizer_file
from bench.store.protocol import Protocol
from bench.store.provenance import code_version, device_description, environment, on_main
from bench.store.results import ResultStore, set_aside

HEARTBEAT_EVERY = 50      # iterations between lock touches
MAX_SET_ASIDE = 3         # unusable files set aside for one cell before its failure is recorded
PARAMETER_BOUND = 1e4     # a meta-learned value beyond this (initialised at std 0.02) is a diverged run
PROGRESS_MODES = ("bars", "lines", "none")
LINES_EVERY = 0.1         # "lines": one line per this fraction of a long cell's training
LONG_CELL = 100           # iterations from which a cell counts as long


@dataclass(frozen=True)
class RunOptions:
    """How the cells of a sweep run; nothing here changes a result (threads is fixed per cell, so a result
    does not depend on how many cells run beside it). progress: "bars" (tqdm, on a terminal), "lines" (plain
    lines for a log) or "none"; log: where the training scalars go besides the CSV logs, "none" or "tensorboard"
    (results/tensorboard/<cell>)."""

    results: str
    data_root: str | None = None
    threads: int = 1
    retry_failed: bool = False
    progress: str = "none"
    log: str = "none"


def run_cell(cell: dict, options: RunOptions, device: str = "cpu") -> dict:
    """Run one cell unless it is done, failed before (and not options.retry_failed) or held by another run;
    returns {name, status, seconds[, error, owner]}. A failure is recorded in the results folder."""
    store = ResultStore(options.results)
    name = cell["name"]
    state = store.state(cell, options.retry_failed)
    if state != "todo":
        return {"name": name, "status": f"{state}-before", "seconds": 0.0}
    if not store.try_lock(name):
        return {"name": name, "status": "busy", "owner": store.lock_owner(name), "seconds": 0.0}
    began = time.perf_counter()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        if "regularizer_file" in cell:                # a researcher's own file: loaded here too, the same text
            use_regularizer_file(cell["regularizer_file"])
        store.write(name, _train_and_test(cell, store, options, device))
        return {"name": name, "status": "ran", "seconds": time.perf_counter() - began}
    except DiskFull:                        # nothing more can be saved: the run stops (one line)
        raise
    except NonFinite as err:
        iteration = err.iteration if err.iteration is not None else cell["protocol"]["iterations"]
        failure = {"kind": err.kind, "stage": err.stage, "reason": str(err), "iteration": iteration}
    except UserError as err:
        failure = {"kind": "error", "stage": None, "reason": str(err), "iteration": None}
    except Exception as err:  # noqa: BLE001 - a failed cell must not stop the sweep; the trace is kept
        failure = {"kind": "error", "stage": None, "reason": f"{type(err).__name__}: {err}", "iteration": None,
                   "trace": traceback.format_exc()}
    finally:
        store.unlock(name)
        torch.set_num_threads(threads_before)
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
    """What traces any record of the cell: its name, settings, seed, places, code version (and whether it is in
    main's history), device, versions."""
    version = code_version()
    return {"name": cell["name"],
            "config": {k: cell[k] for k in ("protocol", "learner", "regularizer", "hyper", "preset", "overrides",
                                            "regularizer_file") if k in cell},
            "seed": cell["seed"], "places": cell["places"], "code_version": version, "code_on_main": on_main(version),
            "device": device_description(device), "environment": environment()}


def _train_and_test(cell: dict, store: ResultStore, options: RunOptions, device: str) -> dict:
    """The cell's result; a checkpoint or learning-curve snapshot that cannot be used is moved aside (one warning
    each) and the cell starts again from what is left."""
    for attempt in range(MAX_SET_ASIDE + 1):
        try:
            return _compute(cell, store, options, device)
        except CheckpointUnusable as err:
            if attempt == MAX_SET_ASIDE:
                raise
            aside = set_aside(err.path)
            warn(f"{err}; moved it to {aside} and restarting {cell['name']} from what is left")
    raise AssertionError("unreachable")


def _on_iteration(store: ResultStore, cell: dict, options: RunOptions, curve: CurveRecorder,
                  logs: CellLogs) -> Callable[[int], None]:
    """After each training iteration: touch the lock now and then, take the learning-curve snapshots and log them;
    in "lines" mode, one line per tenth of a long cell."""
    name, iterations = cell["name"], cell["protocol"]["iterations"]
    every = max(1, round(iterations * LINES_EVERY))
    lines = options.progress == "lines" and iterations >= LONG_CELL

    def after(iteration: int) -> None:
        if iteration % HEARTBEAT_EVERY == 0:
            store.heartbeat(name)
        point = curve.on_iteration(iteration)
        if point is not None:
            logs.add_test(point)
        if lines and (iteration % every == 0 or iteration == iterations):
            print(f"{name}: iteration {iteration}/{iterations}", file=sys.stderr, flush=True)
    return after


def _compute(cell: dict, store: ResultStore, options: RunOptions, device: str) -> dict:
    protocol = Protocol(**cell["protocol"])
    name = cell["name"]
    experiment = build_experiment(protocol, cell["learner"], cell["regularizer"], cell["hyper"], cell["seed"],
                                  device=device, data_root=options.data_root)
    bars = options.progress == "bars"
    t0 = time.perf_counter()
    curve = CurveRecorder(experiment, curve_folder(store.checkpoint_path(name)), bars)
    curve.recover(store.checkpoint_path(name))
    tensorboard = store.tensorboard_path(name) if options.log == "tensorboard" else None
    with CellLogs(store.train_log_path(name), store.test_log_path(name), tensorboard, curve.stored_until) as logs:
        training = experiment.train(store.checkpoint_path(name), progress=bars, log=logs,
                                    on_iteration=_on_iteration(store, cell, options, curve, logs))
        _require_trained_parameters(experiment, training["iterations"])
        t1 = time.perf_counter()
        test = experiment.test(attacks=cell["attacks"] or None, progress=bars)
        t2 = time.perf_counter()
        test_curve = curve.finish(test)
        robustness = test.pop("robustness", None)
        logs.finish(test_curve or [{"iteration": training["iterations"], **test}])
    trained = training["iterations"] - training["resumed_from"]        # iterations trained in this process
    return {
        **_identity(cell, device), "status": "ok",
        "runtime": {"threads": torch.get_num_threads(), "allocator": retain_freed_memory()},
        "parameter_count": experiment.learner.parameter_count(),
        "data": {"root": str(data_root_path(options.data_root).resolve()), "dataset": protocol.dataset,
                 "options": protocol.data_options,
                 "train": _bank_info(protocol.train_split, experiment.train_bank),
                 "test": _bank_info(protocol.test_split, experiment.test_bank),
                 "duplicates": cell_record({protocol.train_split: experiment.train_bank,
                                            protocol.test_split: experiment.test_bank})},
        "test": test, "robustness": robustness, "test_curve": test_curve, "training": training,
        "timings": {"train_seconds_this_run": t1 - t0 - curve.seconds, "test_seconds": t2 - t1,
                    "curve_test_seconds_this_run": curve.seconds,
                    "ms_per_iteration": (1000 * (t1 - t0 - curve.seconds) / trained) if trained else None},
    }


def _require_trained_parameters(experiment: Experiment, iteration: int) -> None:
    """Training that ends with a NaN or infinite meta-learned tensor, or one beyond PARAMETER_BOUND, has failed,
    whatever its last loss was."""
    named = experiment.learner.named_parameters()
    bad = [n for n, v in named.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFinite(f"meta-learned parameters {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} are not "
                        f"finite after iteration {iteration}; lower meta_lr or inner_lr", "train", iteration)
    largest, name = max((float(v.detach().abs().max()), n) for n, v in named.items() if v.numel())
    if largest > PARAMETER_BOUND:
        raise Diverged(f"training diverged: the largest meta-learned value is {largest:.3g} ({name}) after iteration "
                       f"{iteration}, beyond {PARAMETER_BOUND:g} (initialised at std 0.02); lower meta_lr or inner_lr",
                       "train", iteration)


def _bank_info(split: str, bank: ImageBank) -> dict:
    return {"split": split, "classes": bank.n_classes, "images_per_class": bank.n_per_class,
            "first_classes": bank.class_names[:3]}
