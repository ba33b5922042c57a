"""Logs people already use: each cell's training curve and meta-tests as CSV beside its JSON, written row by row
while it trains, never repeating or skipping an iteration after a resume; optionally the same scalars in
TensorBoard (--log tensorboard), also from the local workers."""
from __future__ import annotations

import csv
import importlib.util
import warnings
from functools import partial
from pathlib import Path

import pytest

import bench.api
from bench.core.train import meta_train
from bench.runner.cells import expand
from bench.runner.curves import CurveRecorder
from bench.runner.run_cell import RunOptions, run_cell
from bench.store.results import ResultStore
from run_all import main

LOG_EVERY = 2          # a training-curve point every 2 iterations (the runner's 100 would need long cells)
KILL_AT = 5            # after the points at 2 and 4, and the checkpoint at 3: the point at 4 is beyond it


def _cell() -> dict:
    """A smoke cell of 8 iterations with a checkpoint every 3 and learning-curve points at 2 and 4."""
    return expand(["table1"], "smoke", 1, {"iterations": 8, "checkpoint_every": 3, "eval_at": [2, 4]},
                  only="omniglot_20w1s__maml__none__*")[0]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard run folder, by tag: (step, value) in the order read."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = EventAccumulator(str(folder))
    run.Reload()
    return {tag: [(event.step, event.value) for event in run.Scalars(tag)] for tag in run.Tags()["scalars"]}


@pytest.fixture
def short_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cells log a training-curve point every LOG_EVERY iterations."""
    monkeypatch.setattr(bench.api, "meta_train", partial(meta_train, log_every=LOG_EVERY))


def test_the_csv_logs_are_the_records_curves_and_never_read_as_records(tmp_path: Path, short_blocks: None) -> None:
    cell = _cell()
    assert run_cell(cell, RunOptions(str(tmp_path)))["status"] == "ran"
    store = ResultStore(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                         # no CSV file is taken for a damaged record
        assert list(store.all_results()) == [cell["name"]]
    record = store.read(cell["name"])
    train = _rows(store.train_log_path(cell["name"]))
    assert [{k: float(v) for k, v in row.items()} for row in train] == record["training"]["curve"]
    assert [p["iteration"] for p in record["training"]["curve"]] == [2, 4, 6, 8]
    tests = _rows(store.test_log_path(cell["name"]))
    assert list(tests[0]) == ["iteration", "mean", "ci95", "n_episodes"]
    assert [(int(r["iteration"]), float(r["mean"]), float(r["ci95"]), int(r["n_episodes"])) for r in tests] == \
        [(p["iteration"], p["mean"], p["ci95"], p["n_episodes"]) for p in record["test_curve"]]
    assert [int(r["iteration"]) for r in tests] == [2, 4, 8]          # the eval_at points, then the final test
    assert not (tmp_path / "tensorboard").exists()                   # --log none: no TensorBoard run


@pytest.mark.parametrize("log", ["none", "tensorboard"])
def test_a_resumed_cell_neither_repeats_nor_skips_a_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        short_blocks: None, log: str) -> None:
    if log == "tensorboard":
        pytest.importorskip("tensorboard")
    cell = _cell()
    name = cell["name"]
    assert run_cell(cell, RunOptions(str(tmp_path / "straight"), log=log))["status"] == "ran"
    original = CurveRecorder.on_iteration
    seen = {}

    def killed(self: CurveRecorder, iteration: int) -> dict | None:
        point = original(self, iteration)
        if iteration == KILL_AT:
            store = ResultStore(tmp_path / "killed")
            seen["train"] = _rows(store.train_log_path(name))      # what `tail -f` shows while the cell runs
            seen["test"] = _rows(store.test_log_path(name))
            raise KeyboardInterrupt
        return point

    monkeypatch.setattr(CurveRecorder, "on_iteration", killed)
    with pytest.raises(KeyboardInterrupt):
        run_cell(cell, RunOptions(str(tmp_path / "killed"), log=log))
    assert [r["iteration"] for r in seen["train"]] == ["2", "4"] and [r["iteration"] for r in seen["test"]] == ["2", "4"]
    monkeypatch.setattr(CurveRecorder, "on_iteration", original)
    assert run_cell(cell, RunOptions(str(tmp_path / "killed"), log=log))["status"] == "ran"   # from iteration 3
    straight, resumed = ResultStore(tmp_path / "straight"), ResultStore(tmp_path / "killed")
    assert resumed.read(name)["training"]["resumed_from"] == 3
    for path in (ResultStore.train_log_path, ResultStore.test_log_path):
        assert path(resumed, name).read_bytes() == path(straight, name).read_bytes()      # bit-identical on a CPU
    if log == "tensorboard":
        scalars = _scalars(resumed.tensorboard_path(name))
        assert scalars == _scalars(straight.tensorboard_path(name))
        assert [step for step, _ in scalars["train/loss"]] == [2, 4, 6, 8]
        assert [step for step, _ in scalars["test/accuracy"]] == [2, 4, 8]


def test_log_tensorboard_from_the_local_workers(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    flags = ["--table", "1", "--preset", "smoke", "--device", "cpu", "--jobs", "2", "--set", "iterations=4",
             "--only", "omniglot_20w1s__maml__*", "--log", "tensorboard", "--results", str(tmp_path)]
    assert main(flags) == 0
    store = ResultStore(tmp_path)
    records = store.all_results()
    assert len(records) == 2
    for name, record in records.items():
        scalars = _scalars(store.tensorboard_path(name))
        assert set(scalars) == {"train/loss", "train/accuracy", "test/accuracy", "test/ci95"}
        assert scalars["train/loss"] == [(4, pytest.approx(record["training"]["curve"][-1]["loss"]))]
        assert [(step, pytest.approx(value)) for step, value in scalars["test/accuracy"]] == \
            [(p["iteration"], p["mean"]) for p in record["test_curve"]]


def test_log_tensorboard_without_the_package_stops_before_any_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else
                        find_spec(name, *a))
    flags = ["--table", "1", "--preset", "smoke", "--device", "cpu", "--only", "omniglot_20w1s__maml__none__*",
             "--log", "tensorboard", "--results", str(tmp_path / "results")]
    assert main(flags) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install tensorboard" in err, err
    assert not (tmp_path / "results").exists()
