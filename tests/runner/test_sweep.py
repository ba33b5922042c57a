"""run_all.py on the smoke preset: cells, resumable results, shared folders, rendering, clear errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.runner.cells import expand
from bench.runner.estimate import reference_calibration
from bench.store.results import ResultStore
from run_all import main

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--table", "1", "--preset", "smoke", "--only", "omniglot_20w1s__maml__*", "--set", "iterations=4",
         "--set", "checkpoint_every=1", "--device", "cpu", "--jobs", "1"]


def _tables(results: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((results / "tables").glob("*.md"))}


def test_cells_share_training_across_tables():
    cells = expand(["table1", "table2", "table3", "fig5"], "smoke", 1, {})
    maml = [c for c in cells if c["learner"] == "maml" and c["regularizer"] == "none"]
    assert len(maml) == 4                                   # one per protocol, not one per table
    omniglot = next(c for c in maml if c["protocol"]["name"] == "omniglot_20w1s")
    assert {p["table"] for p in omniglot["places"]} == {"table1", "table2", "table3", "fig5"}
    assert set(omniglot["attacks"]) == {"l1", "l2", "linf"}   # Figure 5 asks for its robustness curves
    assert len({c["name"] for c in cells}) == len(cells)


def test_seeds_and_overrides_make_distinct_cells():
    one = expand(["table1"], "smoke", 2, {})
    assert len(one) == 2 * len(expand(["table1"], "smoke", 1, {}))
    changed = expand(["table1"], "smoke", 1, {"iterations": 3})
    assert not {c["name"] for c in changed} & {c["name"] for c in one}


def test_run_then_rerun_skips_finished_cells(tmp_path, capsys):
    assert main(SMALL + ["--results", str(tmp_path)]) == 0
    cells = ResultStore(tmp_path).all_results()
    assert len(cells) == 2                                   # MAML and MAML + meta-dropout, Omniglot 1-shot
    result = next(iter(cells.values()))
    for key in ("config", "seed", "code_version", "device", "test", "training", "timings"):
        assert key in result
    assert len(result["test"]["accuracies"]) == result["test"]["n_episodes"]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*.json")}
    assert main(SMALL + ["--results", str(tmp_path)]) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*.json")}
    assert "MAML" in (tmp_path / "tables" / "table1.md").read_text()


KILL_ARGS = SMALL + ["--set", "iterations=40"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """The uninterrupted run that killed-and-resumed runs must reproduce."""
    root = tmp_path_factory.mktemp("straight")
    assert main(KILL_ARGS + ["--results", str(root)]) == 0
    return root


def _accuracies(results: Path) -> dict[str, list[float]]:
    return {p.name: json.loads(p.read_text())["test"]["accuracies"] for p in (results / "cells").glob("*.json")}


@pytest.mark.parametrize("sig,jobs", [(signal.SIGKILL, 1), (signal.SIGTERM, 1), (signal.SIGTERM, 2)])
def test_killed_run_finishes_with_the_same_tables(tmp_path, straight_run, sig, jobs):
    killed = tmp_path / "killed"
    args = KILL_ARGS + ["--jobs", str(jobs)]
    cmd = [sys.executable, str(REPO / "run_all.py")] + args + ["--results", str(killed)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    checkpoints = killed / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not list(checkpoints.glob("*.pt")):
        time.sleep(0.2)
    time.sleep(1.0)
    assert list((killed / "locks").glob("*.lock"))                 # killed while a cell runs
    proc.send_signal(sig)
    stderr = proc.communicate(timeout=60)[1]
    if sig == signal.SIGTERM:                                      # like Ctrl-C: a message, locks released
        assert proc.returncode == 128 + signal.SIGTERM
        assert "interrupted by SIGTERM: finished cells are saved" in stderr and "Traceback" not in stderr
        assert "leaked semaphore" not in stderr                    # killed workers leave no named semaphore
        assert not list((killed / "locks").glob("*.lock"))
    assert main(args + ["--results", str(killed)]) == 0
    assert _tables(killed) == _tables(straight_run)                # whatever --jobs each part ran with
    assert _accuracies(killed) == _accuracies(straight_run)


def test_ctrl_c_stops_parallel_workers_quietly(tmp_path):
    """Ctrl-C reaches the whole process group while two workers train: one message, exit 130, no worker's
    traceback, no semaphore left behind, no lock."""
    results = tmp_path / "results"
    cmd = [sys.executable, str(REPO / "run_all.py")] + KILL_ARGS + ["--jobs", "2", "--results", str(results)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not (
            len(list((results / "locks").glob("*.lock"))) == 2 and list((results / "checkpoints").glob("*.pt"))):
        time.sleep(0.2)
    time.sleep(0.5)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be interrupted")
    os.killpg(proc.pid, signal.SIGINT)                             # what a terminal's Ctrl-C does
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + signal.SIGINT, stderr
    assert "interrupted: finished cells are saved" in stderr
    assert "Traceback" not in stderr and "leaked semaphore" not in stderr, stderr
    assert not list((results / "locks").glob("*.lock"))


def test_a_live_lock_makes_another_run_skip_the_cell(tmp_path):
    cell = expand(["table1"], "smoke", 1, {}, only="maml")[0]
    store = ResultStore(tmp_path)
    assert store.try_lock(cell["name"])
    assert not store.try_lock(cell["name"])                   # this process is alive: not stale
    store.unlock(cell["name"])
    assert store.try_lock(cell["name"])


def test_dry_run_lists_cells_with_estimates(tmp_path, capsys, monkeypatch, data_root):
    monkeypatch.setattr("bench.runner.sweep.calibrate", lambda cells, device, threads: reference_calibration("cpu"))
    assert main(["--table", "2", "--preset", "paper", "--dry-run", "--data-root", str(data_root),
                 "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mixup" in out and "vib" in out and " left: about " in out and "(calibration: reference figures)" in out


@pytest.mark.parametrize("argv,message", [
    (["--table", "9"], "unknown table"),
    (["--preset", "nope", "--dry-run"], "unknown preset"),
    (["--set", "iterations"], "key=value"),
    (["--set", "bogus=1", "--dry-run"], "unknown protocol setting"),
    (["--set", "iterations=many", "--dry-run"], "iterations must be an integer >= 1"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    assert main(argv + ["--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_paper_preset_without_gpu_asks_first(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("bench.runner.sweep.calibrate", lambda cells, device, threads: reference_calibration("cpu"))
    assert main(["--table", "1", "--preset", "paper", "--data-root", str(tmp_path / "none"),
                 "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err                                   # asked before the data is looked for
    assert "--preset smoke" in err and "one NVIDIA H100 80GB HBM3: about" in err


def test_two_runs_sharing_a_folder_split_the_cells(tmp_path):
    shared, straight = tmp_path / "shared", tmp_path / "straight"
    args = ["--table", "1", "--preset", "smoke", "--only", "omniglot_20w1s__*", "--set", "iterations=6",
            "--device", "cpu"]
    assert main(args + ["--results", str(straight)]) == 0
    cmd = [sys.executable, str(REPO / "run_all.py")] + args + ["--results", str(shared)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert main(args + ["--results", str(shared)]) == 0          # picks up any cell the other run still held
    assert _tables(shared) == _tables(straight)
    assert not list((shared / "locks").glob("*.lock"))


def test_release_preset_sets_the_release_meta_lr_for_meta_dropout_only():
    cells = expand(["table1"], "release", 1, {})
    lr = {(c["protocol"]["name"], c["learner"], c["regularizer"]): c["protocol"]["meta_lr"] for c in cells}
    assert lr[("omniglot_20w1s", "maml", "meta_dropout")] == 3e-4
    assert lr[("omniglot_20w1s", "metasgd", "meta_dropout")] == 1e-3      # not in the release
    assert lr[("omniglot_20w1s", "maml", "none")] == 1e-3
    assert lr[("omniglot_20w5s", "maml", "meta_dropout")] == 1e-3
    assert all(c["protocol"]["meta_batch"] == 4 for c in cells if c["protocol"]["dataset"] == "omniglot")
