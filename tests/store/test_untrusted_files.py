"""Files the suite reads from shared results folders or third-party downloads never run code: a pickled object whose
__reduce__ runs a shell command, placed as an unfinished cell's checkpoint, as a learning-curve snapshot, as the final
checkpoint a figure reads, or as a miniImageNet pickle cache, is refused (the marker file it would create never
appears); the cell is set aside and computed again, the figure and the dataset fail with one line."""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from bench.data.mini_imagenet import load_mini_imagenet
from bench.runner.cells import expand
from bench.runner.run_cell import RunOptions, run_cell
from bench.store.results import ResultStore
from bench.util.errors import UserError
from bench.util.notice import RepairWarning
from bench.util.paths import CACHE_DIR_ENV
from run_all import main


class RunsCode:
    """An object that, when unpickled by an unrestricted loader, runs `touch marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _cell(**overrides) -> dict:
    return expand(["curves"], "smoke", 1, {"iterations": 8, **overrides}, only="maml")[0]


def test_a_crafted_checkpoint_of_an_unfinished_cell_runs_nothing(tmp_path: Path):
    marker, store, cell = tmp_path / "marker", ResultStore(tmp_path / "results"), _cell()
    store.checkpoint_path(cell["name"]).parent.mkdir(parents=True)
    torch.save({"learner": RunsCode(marker), "iteration": 4}, store.checkpoint_path(cell["name"]))
    with pytest.warns(RepairWarning, match="objects other than tensors"):
        assert run_cell(cell, RunOptions(str(store.root)))["status"] == "ran"
    assert not marker.exists()
    assert (store.root / "checkpoints" / ".invalid" / f"{cell['name']}.pt").exists()
    assert store.read(cell["name"])["training"]["resumed_from"] == 0


def test_a_crafted_curve_snapshot_runs_nothing_and_the_point_is_recomputed(tmp_path: Path):
    marker, store, cell = tmp_path / "marker", ResultStore(tmp_path / "results"), _cell(eval_at=[4])
    assert run_cell(cell, RunOptions(str(store.root)))["status"] == "ran"
    first = store.read(cell["name"])
    curve = store.checkpoint_path(cell["name"]).with_suffix(".curve")
    store.result_path(cell["name"]).unlink()
    (curve / "at_4.json").unlink()
    torch.save(RunsCode(marker), curve / "at_4.pt")
    with pytest.warns(RepairWarning):
        assert run_cell(cell, RunOptions(str(store.root)))["status"] == "ran"
    assert not marker.exists()
    again = store.read(cell["name"])
    assert again["test_curve"] == first["test_curve"] and again["test"]["accuracies"] == first["test"]["accuracies"]


def test_a_foreign_or_damaged_curve_point_is_set_aside_and_recomputed(tmp_path: Path):
    store, cell = ResultStore(tmp_path / "results"), _cell(eval_at=[4])
    assert run_cell(cell, RunOptions(str(store.root)))["status"] == "ran"
    first = store.read(cell["name"])
    curve = store.checkpoint_path(cell["name"]).with_suffix(".curve")
    store.result_path(cell["name"]).unlink()
    (curve / "at_4.json").write_text("{}")
    torch.save({"theta/other": torch.zeros(1)}, curve / "at_4.pt")            # a foreign snapshot
    with pytest.warns(RepairWarning, match="not a valid learning-curve point"):
        assert run_cell(cell, RunOptions(str(store.root)))["status"] == "ran"
    again = store.read(cell["name"])
    assert again["test_curve"] == first["test_curve"]
    assert (curve / ".invalid" / "at_4.json").exists() and (curve / ".invalid" / "at_4.pt").exists()


def test_a_crafted_final_checkpoint_runs_nothing_when_a_figure_reads_it(tmp_path: Path, capsys):
    results, marker = tmp_path / "results", tmp_path / "marker"
    assert main(["--table", "fig7", "--preset", "smoke", "--results", str(results)]) == 0
    checkpoints = sorted((results / "checkpoints").glob("*.pt"))
    assert checkpoints
    for path in checkpoints:
        torch.save({"learner": RunsCode(marker), "iteration": 8}, path)
    shutil.rmtree(results / "figures", ignore_errors=True)                     # no cached figure data
    capsys.readouterr()
    main(["--table", "fig7", "--preset", "smoke", "--results", str(results), "--render-only"])
    assert not marker.exists()
    assert "objects other than tensors" in capsys.readouterr().err


def test_a_crafted_mini_imagenet_pickle_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    marker = tmp_path / "marker"
    (tmp_path / "mini_imagenet").mkdir()
    with open(tmp_path / "mini_imagenet" / "mini-imagenet-cache-train.pkl", "wb") as f:
        pickle.dump({"image_data": RunsCode(marker), "class_dict": {}}, f)
    with pytest.raises(UserError, match="names posix.system|names os.system") as err:
        load_mini_imagenet(tmp_path, "train", classes=2, per_class=3)
    assert not marker.exists() and "\n" not in str(err.value) and "folders or csv format" in str(err.value)
