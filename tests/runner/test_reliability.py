"""Wrong-looking-right numbers and unclear stops: a diverged run is a recorded failure with its evidence, never a
result; a model that predicts one class everywhere is flagged; settings the data cannot serve stop before any
cell runs (also --dry-run); names that become file names cannot leave their folder; a full disk stops the run in
one line; a killed task process is named with its signal."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core.learner import LearnerConfig, MetaLearner
from bench.core.train import meta_train
from bench.data.episodes import EpisodeSampler
from bench.data.synthetic import synthetic_bank
from bench.execution.task_processes import TaskProcessPool
from bench.runner import run_cell as run_cell_module
from bench.util.errors import UserError
from bench.util.failures import Diverged
from regularizers import build_regularizer
from run_all import main
from tables import load_table_def, render_markdown
from tests.meta_gradcheck import TINY, tiny_episodes, tiny_learner
from tests.tables.test_tables import make_result

SMOKE_MAML = ["--table", "1", "--preset", "smoke", "--only", "omniglot_20w1s__maml__none__*", "--jobs", "1"]


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "cells").glob("*.json"))]


def test_a_diverging_meta_loss_stops_training_with_its_evidence():
    learner = MetaLearner(TINY, build_regularizer("none"), LearnerConfig(inner_steps=1), seed=0)
    sampler = EpisodeSampler(synthetic_bank(6, 6, (1, 16, 16), seed=0), TINY.ways, 1, 2, seed=1)
    with pytest.raises(Diverged, match=r"the meta-loss diverged: .* above 100 x the chance level ln\(3\)") as err:
        meta_train(learner, sampler, iterations=20, meta_lr=1e6, meta_batch=2, progress=False, log_every=5)
    assert err.value.kind == "diverged" and err.value.stage == "train" and err.value.iteration >= 1


def test_a_diverged_cell_is_a_failure_never_a_number(tmp_path: Path, capsys):
    assert main(SMOKE_MAML + ["--set", "meta_lr=1e6", "--results", str(tmp_path)]) == 1
    (record,) = _records(tmp_path)
    assert record["status"] == "failed" and record["kind"] == "diverged" and "diverged" in record["reason"]
    table = (tmp_path / "tables" / "table1.md").read_text()
    assert "–§" in table and "diverged" in table and "20.00" not in table
    assert main(SMOKE_MAML + ["--set", "meta_lr=1e6", "--results", str(tmp_path)]) == 1    # kept, not run again
    assert "failed before" in capsys.readouterr().err


def test_parameters_beyond_the_bound_are_a_diverged_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(run_cell_module, "PARAMETER_BOUND", 1e-3)       # every trained conv weight exceeds it
    assert main(SMOKE_MAML + ["--results", str(tmp_path)]) == 1
    (record,) = _records(tmp_path)
    assert record["kind"] == "diverged" and "the largest meta-learned value is" in record["reason"]


def test_a_model_predicting_one_class_everywhere_is_flagged():
    collapsed = make_result("table2", "meta_dropout", "omniglot_20w1s", 0, 97.5)
    collapsed["test"]["single_class_episodes"] = collapsed["test"]["n_episodes"]
    other = make_result("table2", "maml", "omniglot_20w1s", 0, 90.0)
    other["test"]["single_class_episodes"] = 0
    text = render_markdown(load_table_def("table2"), [collapsed, other])
    assert "97.50 ± 0.20¶" in text and "**97.50" not in text and "**90.00 ± 0.20**" in text
    assert "¶: a seed's model predicts one class for every query of every test episode" in text


def test_the_meta_test_counts_single_class_episodes():
    from bench.core.evaluate import meta_test
    learner = tiny_learner("none", dtype=torch.float32)
    with torch.no_grad():
        learner.adapted["head.bias"].copy_(torch.tensor([50.0, 0.0, 0.0]))      # every query is class 0
    episodes = tiny_episodes(batch=2)
    episodes = type(episodes)(*(t.float() if t.is_floating_point() else t for t in (
        episodes.x_support, episodes.y_support, episodes.x_query, episodes.y_query)))

    class Fixed(EpisodeSampler):
        def __init__(self):
            pass

        def sample(self, batch):
            return type(episodes)(*(t[:batch] for t in (episodes.x_support, episodes.y_support, episodes.x_query,
                                                         episodes.y_query)))
    result = meta_test(learner, Fixed(), episodes=1, batch=1, progress=False)
    assert result["single_class_episodes"] == 1 and result["mean"] == pytest.approx(100 / 3)


@pytest.mark.parametrize("setting,says", [("ways=1000", "ways=1000 but the synthetic train split"),
                                          ("queries=30", "shots + queries = 31 images per class"),
                                          ("test_queries=30", "for meta-test")])
def test_settings_the_data_cannot_serve_stop_before_any_cell(tmp_path: Path, capsys, setting: str, says: str):
    for extra in (["--dry-run"], []):
        assert main(["--table", "1", "--preset", "smoke", "--set", setting, "--results", str(tmp_path)] + extra) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1
    assert not list(tmp_path.glob("cells/*.json"))


def test_image_size_against_real_omniglot(tmp_path: Path, capsys, omniglot_root: Path):
    assert main(["--table", "1", "--set", "image_size=16", "--only", "omniglot*", "--dry-run", "--data-root",
                 str(omniglot_root), "--results", str(tmp_path)]) == 2
    assert "omniglot images are 1x28x28" in capsys.readouterr().err


@pytest.mark.parametrize("field,value", [("name", "../../ESCAPED_TABLE"), ("name", ".hidden"),
                                         ("row", "a/b"), ("row", "..")])
def test_names_that_become_file_names_stay_in_their_folder(tmp_path: Path, field: str, value: str):
    table = {"name": "mine", "title": "t", "columns": ["omniglot_20w1s"],
             "rows": [{"id": "maml", "label": "MAML", "learner": "maml", "regularizer": "none"}]}
    if field == "name":
        table["name"] = value
    else:
        table["rows"][0]["id"] = value
    path = tmp_path / "mine.yaml"
    path.write_text(json.dumps(table))
    with pytest.raises(UserError, match="cannot name a file"):
        load_table_def(path)


def test_a_full_disk_stops_the_run_in_one_line(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    """torch.save fails as it does on a full disk (a C++ stream error), and no space is left: one line naming the
    folder and 'no space left', exit 2, no cell failure recorded, the finished result of an earlier run kept."""
    assert main(SMOKE_MAML + ["--results", str(tmp_path)]) == 0
    (finished,) = _records(tmp_path)
    other = ["--table", "1", "--preset", "smoke", "--only", "omniglot_20w1s__maml__meta_dropout__*", "--jobs", "1"]

    def full(*args, **kwargs):
        raise RuntimeError("basic_ios::clear: iostream error")
    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr("bench.util.atomic.space_left", lambda folder: 0)
    assert main(other + ["--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no space left on the file system of ") and str(tmp_path) in err[-1]
    assert _records(tmp_path) == [finished]


def test_a_killed_task_process_is_named_with_its_signal():
    learner = tiny_learner("none")
    learner.config = type(learner.config)(**{**learner.config.__dict__, "execution": "per_task"})
    with TaskProcessPool(learner, 2) as pool:
        os.kill(pool.pids[0], signal.SIGKILL)
        with pytest.raises(RuntimeError) as err:
            pool.meta_gradients(learner, tiny_episodes(batch=2))
    message = str(err.value)
    assert "was killed by SIGKILL" in message and "out-of-memory" in message and "\n" not in message
