"""No silent wrong numbers (issue 9): verified caches, checked settings, recorded failures, tables rendered from
every finished cell, damaged files named and set aside, one clear line for what cannot go on, shared folders."""
from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.api import Experiment
from bench.runner.cells import expand
from bench.data.cache import cached_arrays
from bench.data.duplicates import DataHygieneWarning
from bench.data.registry import DATASETS
from bench.util.notice import Notice, RepairWarning
from bench.util.errors import UserError
from bench.store.protocol import ALLOWED, FIELDS, Protocol, load_protocol, parse_overrides
from bench.store.results import ResultStore
from run_all import main

SMOKE = ["--table", "1", "--preset", "smoke", "--device", "cpu", "--jobs", "1", "--set", "iterations=4", "--set",
         "checkpoint_every=1"]                                    # --jobs 1: in this process (monkeypatches apply)
MAML = SMOKE + ["--only", "omniglot_20w1s__maml__*"]          # MAML and MAML + meta-dropout, Omniglot 1-shot
PLAIN_MAML = SMOKE + ["--only", "omniglot_20w1s__maml__none__*"]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every cell file's bytes, by name."""
    return {p.name: p.read_bytes() for p in sorted((root / "cells").glob("*.json"))}


def not_run(table: str) -> int:
    """How many places of a Markdown table show "not run yet"."""
    return sum(line.count("–†") for line in table.splitlines() if line.startswith("| "))


def one_line(text: str) -> str:
    """The stderr of a command stopped before any cell ran, checked to be one line without a traceback."""
    text = text.strip()
    assert "\n" not in text and "Traceback" not in text, text
    return text


def last_line(text: str) -> str:
    """The error line that ends the stderr of a command stopped while running (after its progress lines)."""
    assert "Traceback" not in text, text
    line = text.strip().splitlines()[-1].split("\r")[-1]
    assert line.startswith("error: "), text
    return line


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A results folder holding two finished smoke cells and their table."""
    root = tmp_path_factory.mktemp("finished")
    assert main(MAML + ["--results", str(root)]) == 0
    assert len(snapshot(root)) == 2
    return root


@pytest.fixture
def results(finished: Path, tmp_path: Path) -> Path:
    """A private copy of the finished folder."""
    return Path(shutil.copytree(finished, tmp_path / "results"))


# 1. The decoded-image cache is verified by a checksum.

def test_cache_detects_same_size_corruption_and_rebuilds(tmp_path: Path) -> None:
    built = np.arange(4 * 1000, dtype=np.int64).astype(np.uint8).reshape(4, 1000)
    calls = []

    def build():
        calls.append(1)
        return built.copy(), ["a", "b", "c", "d"]
    cached_arrays(tmp_path, "toy", "k", build)
    array_file = next(tmp_path.glob("toy-*.npy"))
    data = bytearray(array_file.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes()
    array_file.write_bytes(bytes(data))                      # same size, same header, different pixels
    with pytest.warns(RepairWarning, match=f"cache {array_file} is corrupt.*checksum.*; rebuilding it$"):
        images, _ = cached_arrays(tmp_path, "toy", "k", build)
    assert np.array_equal(images, built) and len(calls) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")                        # the rebuilt entry loads without a warning
        assert np.array_equal(cached_arrays(tmp_path, "toy", "k", build)[0], built)
    assert len(calls) == 2


def test_cache_without_a_checksum_is_rebuilt(tmp_path: Path) -> None:
    build = lambda: (np.ones((2, 3), np.uint8), ["a", "b"])
    cached_arrays(tmp_path, "toy", "k", build)
    index = next(tmp_path.glob("toy-*.json"))
    meta = json.loads(index.read_text())
    del meta["sha256"]                                        # an entry written before checksums existed
    index.write_text(json.dumps(meta))
    with pytest.warns(RepairWarning, match="no checksum"):
        cached_arrays(tmp_path, "toy", "k", build)
    assert "sha256" in json.loads(index.read_text())


def test_repair_warnings_print_as_one_line() -> None:
    text = warnings.formatwarning("cache x is corrupt; rebuilding it", RepairWarning, "f.py", 3, "line")
    assert text == "warning: cache x is corrupt; rebuilding it\n"


def test_notices_print_as_one_line() -> None:
    assert warnings.formatwarning("omniglot: 12 groups", DataHygieneWarning, "registry.py", 85,
                                  "return loader(...)") == "notice: omniglot: 12 groups\n"
    assert warnings.formatwarning("--data-root /x is not used", Notice, "f.py", 3, "line") == \
        "notice: --data-root /x is not used\n"


# 2. Every protocol setting has a declared range, checked before any cell starts.

def test_every_protocol_setting_has_a_declared_range() -> None:
    assert set(ALLOWED) == FIELDS
    assert set(ALLOWED["dataset"].choices) == set(DATASETS)


@pytest.mark.parametrize("setting,allowed", [
    ("iterations=0", "an integer >= 1"), ("iterations=-5", "an integer >= 1"), ("shots=0", "an integer >= 1"),
    ("queries=0", "an integer >= 1"), ("test_episodes=0", "an integer >= 1"), ("meta_batch=0", "an integer >= 1"),
    ("meta_lr=0", "a finite number > 0"), ("meta_lr=-1e-3", "a finite number > 0"),
    ("inner_lr=-0.1", "a finite number > 0"), ("ways=1", "an integer >= 2"), ("image_size=8", "an integer >= 16"),
    ("iterations=2.5", "an integer >= 1"), ("bn_mode=both", "one of shift, affine"),
    ("first_order=1", "true or false"), ("meta_lr=.nan", "a finite number > 0"),
    ("execution=fast", "one of auto, vectorized, per_task, reference"), ("cuda_graph=always", "one of auto, on, off"),
])
@pytest.mark.parametrize("mode", ["--dry-run", "run"])
def test_out_of_range_settings_stop_before_any_cell(results: Path, capsys, setting: str, allowed: str,
                                                   mode: str) -> None:
    before = snapshot(results)
    flags = ["--dry-run"] if mode == "--dry-run" else []
    assert main(MAML + ["--set", setting, "--results", str(results)] + flags) == 2
    key, _, value = setting.partition("=")
    err = one_line(capsys.readouterr().err)
    assert f"{key}=" in err and f"{key} must be {allowed}" in err, err
    assert snapshot(results) == before and not (results / "checkpoints" / ".invalid").exists()


@pytest.mark.parametrize("flag", [["--jobs", "0"], ["--jobs", "-2"], ["--seeds", "0"]])
def test_zero_jobs_or_seeds_is_one_line(results: Path, capsys, flag: list[str]) -> None:
    before = snapshot(results)
    assert main(MAML + flag + ["--results", str(results)]) == 2
    err = one_line(capsys.readouterr().err)
    assert f"{flag[0]} {flag[1]} is not allowed" in err and "integer >= 1" in err
    assert snapshot(results) == before


def test_integers_and_exponent_strings_are_read_as_floats(tmp_path: Path) -> None:
    protocol = load_protocol("omniglot_20w1s", "smoke", {"inner_lr": 1, "meta_lr": "1e-4"})
    assert protocol.inner_lr == 1.0 and isinstance(protocol.inner_lr, float)
    assert protocol.meta_lr == 1e-4 and isinstance(protocol.meta_lr, float)
    direct = Protocol(**{**protocol.to_dict(), "meta_lr": "3e-4"})        # as PyYAML reads `meta_lr: 3e-4`
    assert direct.meta_lr == 3e-4
    assert load_protocol("omniglot_20w1s", "smoke", parse_overrides(["cuda_graph=off"])).cuda_graph == "off"
    assert main(PLAIN_MAML + ["--set", "inner_lr=1", "--set", "meta_lr=1e-4", "--results", str(tmp_path)]) == 0
    (record,) = ResultStore(tmp_path).all_results().values()
    assert record["status"] == "ok"
    assert record["config"]["protocol"]["inner_lr"] == 1.0 and record["config"]["protocol"]["meta_lr"] == 1e-4


# 3. Non-finite training or testing is a recorded failure: a marked dash, never bold, never averaged, kept.

def test_diverged_training_is_recorded_and_kept(results: Path, capsys) -> None:
    before = snapshot(results)
    diverge = MAML + ["--set", "inner_lr=1e30", "--results", str(results)]
    assert main(diverge) == 1
    err = capsys.readouterr().err
    assert "meta-loss became nan at iteration" in err
    store = ResultStore(results)
    failed = [r for r in store.all_results().values() if r["status"] == "failed"]
    assert len(failed) == 2
    for record in failed:
        assert record["kind"] == "non_finite" and record["stage"] == "train"
        assert isinstance(record["iteration"], int) and f"iteration {record['iteration']}" in record["reason"]
        assert record["config"]["protocol"]["inner_lr"] == 1e30
    assert {k: v for k, v in snapshot(results).items() if k in before} == before      # finished cells untouched
    table = (results / "tables" / "table1.md").read_text()
    maml_line = next(line for line in table.splitlines() if line.startswith("| MAML |"))
    assert "–§" in maml_line and "**" not in maml_line and "20.00" not in maml_line
    assert "–§: failed, no valid result" in table and "meta-loss became nan at iteration" in table
    stamps = {p: p.stat().st_mtime_ns for p in (results / "cells").glob("*.json")}
    assert main(diverge) == 1                                            # kept: not run again ...
    assert "failed in an earlier run and were skipped" in capsys.readouterr().err
    assert stamps == {p: p.stat().st_mtime_ns for p in (results / "cells").glob("*.json")}
    assert main(diverge + ["--retry-failed"]) == 1                      # ... unless asked
    again = {p: p.stat().st_mtime_ns for p in (results / "cells").glob("*.json")}
    assert sum(again[p] != stamps[p] for p in stamps) == 2


def test_nan_parameters_after_the_last_loss_are_a_failure(tmp_path: Path, monkeypatch, capsys) -> None:
    train = Experiment.train

    def poisoned(self, *args, **kwargs):
        summary = train(self, *args, **kwargs)
        with torch.no_grad():
            next(iter(self.learner.meta_only.values())).fill_(float("nan"))
        return summary
    monkeypatch.setattr(Experiment, "train", poisoned)
    assert main(PLAIN_MAML + ["--results", str(tmp_path)]) == 1
    (record,) = ResultStore(tmp_path).all_results().values()
    assert record["status"] == "failed" and record["stage"] == "train" and record["iteration"] == 4
    assert "parameters meta/" in record["reason"] and "not finite after iteration 4" in record["reason"]
    assert "not finite" in capsys.readouterr().err


def test_non_finite_test_logits_are_a_failure(tmp_path: Path, monkeypatch) -> None:
    from bench.core.learner import MetaLearner
    logits = MetaLearner.query_logits

    def infinite_at_test(self, *args, **kwargs):           # meta-test runs without gradients; training with
        out = logits(self, *args, **kwargs)
        return out if torch.is_grad_enabled() else out * float("inf")
    monkeypatch.setattr(MetaLearner, "query_logits", infinite_at_test)
    assert main(PLAIN_MAML + ["--results", str(tmp_path)]) == 1
    (record,) = ResultStore(tmp_path).all_results().values()
    assert record["status"] == "failed" and record["kind"] == "non_finite" and record["stage"] == "test"
    assert "meta-test logits are not finite" in record["reason"] and record["iteration"] == 4


def test_an_error_is_recorded_but_tried_again(tmp_path: Path, monkeypatch, capsys) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")
    monkeypatch.setattr("bench.runner.run_cell.build_experiment", broken)
    assert main(PLAIN_MAML + ["--results", str(tmp_path)]) == 1
    (record,) = ResultStore(tmp_path).all_results().values()
    assert record["kind"] == "error" and "RuntimeError: out of memory" in record["reason"] and record["trace"]
    assert "–§" in (tmp_path / "tables" / "table1.md").read_text()
    monkeypatch.undo()
    assert main(PLAIN_MAML + ["--results", str(tmp_path)]) == 0      # an error is not a result: run again
    (record,) = ResultStore(tmp_path).all_results().values()
    assert record["status"] == "ok"


def test_a_failure_never_replaces_a_finished_result(results: Path) -> None:
    store = ResultStore(results)
    name, record = next(iter(store.all_results().items()))
    assert not store.write_failure(name, {**record, "status": "failed", "kind": "error", "reason": "x",
                                          "stage": None, "iteration": None})
    assert store.read(name) == record


def _record(row: str, seed: int, mean: float | None, reason: str = "meta-loss became nan at iteration 3") -> dict:
    base = {"table": "table2", "row": row, "column": "omniglot_20w1s", "seed": seed, "code_version": "abc",
            "config": {"preset": "smoke"}}
    if mean is None:
        return {**base, "status": "failed", "kind": "non_finite", "reason": reason, "iteration": 3}
    return {**base, "status": "ok", "test": {"mean": mean, "ci95": 0.5, "accuracies": [mean]}}


def test_failed_seeds_are_never_averaged_or_bold() -> None:
    from tables import load_table_def, render_latex, render_markdown
    table2 = load_table_def("table2")
    records = [_record("maml", 0, 90.0), _record("maml", 1, None),          # one of two seeds failed
               _record("meta_dropout", 0, None),                           # the only seed failed
               _record("mixup_1", 0, 80.0), _record("vib_1e-5", 0, 80.0)]  # a tie
    text = render_markdown(table2, records)
    lines = {line.split(" | ")[0][2:].strip(): line.split(" | ") for line in text.splitlines() if line.startswith("| ")}
    assert lines["No perturbation"][1] == "90.00 ± 0.50 (1 more failed–§)" and "**" not in text
    assert lines["Multiplicative"][1] == "–§"
    assert "maml, Omniglot 20-way 1-shot, seed 1: meta-loss became nan at iteration 3" in text
    latex = render_latex(table2, records)
    assert r"--$^\S$" in latex and r"\textbf" not in latex
    assert r"meta\_dropout, Omniglot 20-way 1-shot, seed 0" in latex


def test_a_single_best_is_bold() -> None:
    from tables import load_table_def, render_markdown
    text = render_markdown(load_table_def("table2"), [_record("maml", 0, 90.0), _record("mixup_1", 0, 80.0)])
    assert "**90.00 ± 0.50**" in text


# 4. Filters choose what runs, not what the tables show.

def test_only_and_seeds_do_not_clobber_finished_rows(results: Path) -> None:
    table = (results / "tables" / "table1.md").read_text()
    assert not_run(table) == 14                                          # 16 places, 2 done
    assert main(PLAIN_MAML + ["--results", str(results)]) == 0
    assert (results / "tables" / "table1.md").read_text() == table
    assert main(PLAIN_MAML + ["--seeds", "2", "--results", str(results)]) == 0
    assert main(MAML + ["--only", "omniglot_20w1s__maml__meta_dropout__*", "--results", str(results)]) == 0
    text = (results / "tables" / "table1.md").read_text()
    assert "n=2" in text                                                 # seed 1 of MAML is shown ...
    assert not_run(text) == 14                                           # ... and nothing else went missing
    assert main(MAML + ["--render-only", "--results", str(results)]) == 0
    assert (results / "tables" / "table1.md").read_text() == text


# 5. A damaged cell file is named, set aside and counts as not run.

@pytest.mark.parametrize("content", [
    "{}", "[]", '"text"', "{not json", "", "\x00\xff garbage",
    "WRONG_NAME", "MISSING_TEST", "STRING_MEAN", "NAN_MEAN", "TRUNCATED",
    "STRING_WAYS", "NO_WAYS", "EMPTY_PROTOCOL", "STRING_IN_CURVE", "EMPTY_CURVE_POINT",
])
def test_invalid_cell_file_is_set_aside(results: Path, capsys, content: str) -> None:
    name = next(iter(snapshot(results)))
    path = results / "cells" / name
    valid = json.loads(path.read_text())
    others = {k: v for k, v in snapshot(results).items() if k != name}
    damaged = {"WRONG_NAME": json.dumps({**valid, "name": "other"}),
               "MISSING_TEST": json.dumps({k: v for k, v in valid.items() if k != "test"}),
               "STRING_MEAN": json.dumps({**valid, "test": {**valid["test"], "mean": "97.1"}}),
               "NAN_MEAN": json.dumps({**valid, "test": {**valid["test"], "mean": float("nan")}}),
               "TRUNCATED": path.read_text()[:200],
               "STRING_WAYS": json.dumps(_protocol(valid, ways="5")),
               "NO_WAYS": json.dumps(_protocol(valid, ways=None)),
               "EMPTY_PROTOCOL": json.dumps({**valid, "config": {**valid["config"], "protocol": {}}}),
               "STRING_IN_CURVE": json.dumps({**valid, "test_curve": [
                   {"iteration": 4, "accuracies": ["x"] + valid["test"]["accuracies"][1:],
                    "n_episodes": valid["test"]["n_episodes"], "mean": valid["test"]["mean"]}]}),
               "EMPTY_CURVE_POINT": json.dumps({**valid, "test_curve": [{}]}),
               }.get(content, content)
    path.write_text(damaged, encoding="utf-8", errors="surrogateescape")
    with pytest.warns(RepairWarning, match=f"{path} is not a valid cell record .*moved it to .*\\.invalid"):
        assert main(MAML + ["--render-only", "--results", str(results)]) == 0
    assert not path.exists() and (results / "cells" / ".invalid" / name).read_text() == damaged
    assert snapshot(results) == others
    assert not_run((results / "tables" / "table1.md").read_text()) == 15     # that cell: not run
    capsys.readouterr()


def _protocol(record: dict, **changes) -> dict:
    """The record with protocol settings changed (None: deleted)."""
    protocol = {k: v for k, v in {**record["config"]["protocol"], **changes}.items() if v is not None}
    return {**record, "config": {**record["config"], "protocol": protocol}}


def test_a_set_aside_cell_is_computed_again(results: Path) -> None:
    name, content = next(iter(snapshot(results).items()))
    (results / "cells" / name).write_text("{}")
    with pytest.warns(RepairWarning, match="not a valid cell record"):
        assert main(MAML + ["--results", str(results)]) == 0
    assert json.loads((results / "cells" / name).read_text())["test"] == json.loads(content)["test"]


def test_a_cell_file_this_user_cannot_read_stops_the_run(results: Path, capsys, monkeypatch) -> None:
    name = next(iter(snapshot(results)))
    unreadable, real_open = results / "cells" / name, open

    def refusing(path, *args, **kwargs):
        if Path(path) == unreadable:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr("builtins.open", refusing)
    before = snapshot(results)
    assert main(MAML + ["--results", str(results)]) == 2
    err = one_line(capsys.readouterr().err)
    assert f"cannot read {unreadable} (Permission denied)" in err and "chmod a+r" in err
    monkeypatch.undo()
    assert snapshot(results) == before


# 6. An unusable checkpoint is named, set aside, and its cell starts again from scratch.

@pytest.mark.parametrize("kind", ["garbage", "empty", "wrong keys"])
def test_unusable_checkpoint_restarts_the_cell(results: Path, kind: str) -> None:
    name = next(iter(snapshot(results)))
    expected = json.loads((results / "cells" / name).read_text())
    (results / "cells" / name).unlink()
    checkpoint = results / "checkpoints" / name.replace(".json", ".pt")
    if kind == "garbage":
        checkpoint.write_bytes(os.urandom(500))
    elif kind == "empty":
        checkpoint.write_bytes(b"")
    else:
        torch.save({"learner": {}, "iteration": 2}, checkpoint)
    with pytest.warns(RepairWarning, match=f"checkpoint {checkpoint} cannot be used.*restarting"):
        assert main(MAML + ["--results", str(results)]) == 0
    assert (results / "checkpoints" / ".invalid" / checkpoint.name).exists()
    again = json.loads((results / "cells" / name).read_text())
    assert again["test"] == expected["test"] and again["training"]["resumed_from"] == 0


# 7. What cannot go on stops with one line, exit code 2, and loses nothing.

def _deny_writes_under(monkeypatch, folder: Path, code: int, empty_files_ok: bool = False) -> None:
    """Make the kernel refuse file creation under `folder` (chmod alone does not stop root). empty_files_ok: the
    start-up write probe (an empty file) still works, as it may on a full disk."""
    real_open, real_mkdir = os.open, os.mkdir

    def refusing_open(path, flags, *args, **kwargs):
        probe = empty_files_ok and Path(path).name.startswith(".write-probe.")
        if str(path).startswith(str(folder)) and flags & os.O_CREAT and not probe:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    def refusing_mkdir(path, *args, **kwargs):
        if str(path).startswith(str(folder)) and not os.path.isdir(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", refusing_open)
    monkeypatch.setattr(os, "mkdir", refusing_mkdir)


def test_read_only_results_folder(results: Path, capsys, monkeypatch) -> None:
    before = snapshot(results)
    (results / "cells" / next(iter(before))).unlink()          # one cell left to run
    before = snapshot(results)
    results.chmod(0o555)
    try:
        if os.geteuid() == 0:
            _deny_writes_under(monkeypatch, results, errno.EACCES)
        assert main(MAML + ["--results", str(results)]) == 2
        err = one_line(capsys.readouterr().err)
        assert f"results folder {results} is not writable (Permission denied)" in err
        assert main(MAML + ["--results", str(results), "--dry-run"]) == 0       # reading needs no write
    finally:
        results.chmod(0o755)
    assert snapshot(results) == before


def test_results_pointing_at_a_file(tmp_path: Path, capsys) -> None:
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    assert main(MAML + ["--results", str(target)]) == 2
    assert "is a file, not a folder" in one_line(capsys.readouterr().err)
    assert target.read_text() == "keep me"


def test_full_disk_at_lock_time(results: Path, capsys, monkeypatch) -> None:
    (results / "cells" / next(iter(snapshot(results)))).unlink()
    before = snapshot(results)
    _deny_writes_under(monkeypatch, results / "locks", errno.ENOSPC, empty_files_ok=True)
    assert main(MAML + ["--results", str(results)]) == 2
    err = last_line(capsys.readouterr().err)
    assert "cannot write the lock" in err and "No space left on device" in err
    assert snapshot(results) == before


def test_full_disk_at_render_time(results: Path, capsys, monkeypatch) -> None:
    tables = {p.name: p.read_bytes() for p in (results / "tables").iterdir()}
    _deny_writes_under(monkeypatch, results / "tables", errno.ENOSPC, empty_files_ok=True)
    before = snapshot(results)
    assert main(MAML + ["--render-only", "--results", str(results)]) == 2
    err = last_line(capsys.readouterr().err)
    assert "cannot write the tables" in err and "No space left on device" in err and "--render-only" in err
    assert {p.name: p.read_bytes() for p in (results / "tables").iterdir()} == tables
    assert snapshot(results) == before


@pytest.mark.parametrize("rows,message", [
    ("rows:\n", "'rows' must be a list of mappings"),
    ("rows:\n  - maml\n", "'rows' must be a list of mappings"),
    ("rows:\n  - {id: x, label: X, learner: maml, regularizer: none, hyper: 3}\n", "it must be a mapping"),
])
def test_malformed_table_definition(tmp_path: Path, capsys, monkeypatch, rows: str, message: str) -> None:
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "table1.yaml").write_text("name: table1\ntitle: T\ncolumns: [omniglot_20w1s]\n" + rows)
    monkeypatch.setattr("tables.defs.TABLES_DIR", folder)
    assert main(["--table", "1", "--preset", "smoke", "--dry-run", "--results", str(tmp_path / "r")]) == 2
    assert message in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("row,message", [
    ("{id: x, label: X, learner: maml, regularizer: dropout_v2, hyper: {}}", "unknown regularizer 'dropout_v2'"),
    ("{id: x, label: X, learner: maml, regularizer: vib, hyper: {betta: 1}}", "has no hyper-parameter ['betta']"),
    ("{id: x, label: X, learner: maml, regularizer: vib, hyper: {beta: -1}}", "beta must be"),
])
@pytest.mark.parametrize("mode", [["--dry-run"], []])
def test_bad_row_is_rejected_before_any_cell(tmp_path: Path, capsys, monkeypatch, row: str, message: str,
                                             mode: list[str]) -> None:
    folder = tmp_path / "tables"
    folder.mkdir()
    good = "{id: maml, label: MAML, learner: maml, regularizer: none, hyper: {}}"
    (folder / "table1.yaml").write_text(f"name: table1\ntitle: T\ncolumns: [omniglot_20w1s]\nrows:\n"
                                        f"  - {good}\n  - {row}\n")
    monkeypatch.setattr("tables.defs.TABLES_DIR", folder)
    assert main(["--table", "1", "--preset", "smoke", "--results", str(tmp_path / "r")] + mode) == 2
    err = one_line(capsys.readouterr().err)
    assert "table table1, row 'x'" in err and message in err
    assert not (tmp_path / "r" / "cells").exists()                          # nothing ran, not even the good row


# 8. Busy cells are named (SIGTERM: tests/runner/test_sweep.py, with SIGKILL).

def test_busy_cells_are_named(tmp_path: Path, capsys) -> None:
    cell = expand(["table1"], "smoke", 1, {"iterations": 4, "checkpoint_every": 1},
                  only="omniglot_20w1s__maml__none__*")[0]
    store = ResultStore(tmp_path)
    assert store.try_lock(cell["name"])                                    # this (live) process holds it
    try:
        assert main(PLAIN_MAML + ["--results", str(tmp_path)]) == 0
    finally:
        store.unlock(cell["name"])
    err = capsys.readouterr().err
    assert f"1 cells are running in another process; run again later to include them: {cell['name']} (" in err
    assert f":{os.getpid()})" in err


# 9. Outputs follow the umask.

@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_follow_the_umask(tmp_path: Path, monkeypatch, umask: int) -> None:
    monkeypatch.setenv("META_DROPOUT_CACHE", str(tmp_path / "cache"))
    old = os.umask(umask)
    try:
        assert main(PLAIN_MAML + ["--results", str(tmp_path / "results")]) == 0
        cached_arrays(tmp_path / "cache", "toy", "k", lambda: (np.ones((2, 3), np.uint8), ["a", "b"]))
        store = ResultStore(tmp_path / "results")
        assert store.try_lock("probe")
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
    finally:
        os.umask(old)
    kinds = {p.suffix for p in files}
    assert {".json", ".pt", ".md", ".tex", ".npy", ".lock"} <= kinds
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o666 & ~umask)}


def test_full_disk_found_at_start(results: Path, capsys, monkeypatch) -> None:
    before = snapshot(results)
    _deny_writes_under(monkeypatch, results / "tables", errno.ENOSPC)
    assert main(MAML + ["--results", str(results)]) == 2
    assert "is not writable (No space left on device); free space" in one_line(capsys.readouterr().err)
    assert snapshot(results) == before


@pytest.mark.parametrize("override,allowed", [
    ({"eval_at": [0, 500]}, "a list of values, each an integer >= 1"),
    ({"eval_at": 500}, "a list of values, each an integer >= 1"),
    ({"test_queries": 0}, "null or an integer >= 1"),
    ({"metasgd_alpha_init": "random"}, "one of constant, uniform"),
    ({"metasgd_alpha_range": [0.1, 0.005]}, "2 increasing values, each a finite number > 0"),
    ({"metasgd_alpha_range": [0.005]}, "2 increasing values, each a finite number > 0"),
    ({"drop_cross_split_duplicates": 1}, "true or false"),
])
def test_list_and_optional_settings_have_ranges_too(override: dict, allowed: str) -> None:
    (key,) = override
    with pytest.raises(UserError, match=f"{key} must be {allowed}"):
        load_protocol("omniglot_20w1s", "smoke", override)


def test_list_and_optional_settings_accept_what_they_allow() -> None:
    protocol = load_protocol("omniglot_20w1s", "smoke", parse_overrides(
        ["eval_at=[500,1000]", "test_queries=null", "metasgd_alpha_range=[1e-3,0.1]"]))
    assert protocol.eval_at == [500, 1000] and protocol.test_queries is None
    assert protocol.metasgd_alpha_range == [1e-3, 0.1] and all(isinstance(a, float) for a in protocol.metasgd_alpha_range)
