"""Learning curves: intermediate evaluations on the cell's fixed episodes, equal to the final result of a run that
stops there, without disturbing training; an interrupted cell neither loses nor repeats an evaluation."""
import json

import pytest

from bench.api import build_experiment
from bench.core.checkpoint import CheckpointUnusable
from bench.runner.cells import expand
from bench.runner.curves import CurveRecorder, curve_folder
from bench.util.errors import UserError
from bench.util.notice import RepairWarning
from bench.store.protocol import load_protocol
from bench.store.results import ResultStore
from bench.runner.run_cell import RunOptions, run_cell

TINY = {"iterations": 6, "checkpoint_every": 2, "test_episodes": 6, "test_batch": 4}


class _Kill(Exception):
    pass


def _run(path, eval_at=(), kill_at=None, **overrides):
    """Train and test like a cell (checkpoint at `path`), optionally crashing after iteration kill_at."""
    protocol = load_protocol("omniglot_20w1s", "smoke", {**TINY, "eval_at": list(eval_at), **overrides})
    experiment = build_experiment(protocol, "maml", "meta_dropout", seed=0)
    recorder = CurveRecorder(experiment, curve_folder(path))
    recorder.recover(path)
    evaluated = []
    original = recorder._evaluate

    def counting(iteration, state):
        evaluated.append(iteration)
        return original(iteration, state)

    recorder._evaluate = counting

    def hook(iteration):
        recorder.on_iteration(iteration)
        if iteration == kill_at:
            raise _Kill

    experiment.train(path, progress=False, on_iteration=hook)
    test = experiment.test(progress=False)
    return test, recorder.finish(test), evaluated


def test_intermediate_points_equal_shorter_runs_and_leave_training_alone(tmp_path):
    test, curve, evaluated = _run(tmp_path / "curve.pt", eval_at=[2, 4, 9])
    assert [p["iteration"] for p in curve] == [2, 4, 6] and evaluated == [2, 4]
    assert len({p["episodes"]["fingerprint"] for p in curve}) == 1
    assert curve[-1]["accuracies"] == test["accuracies"]                 # the last point is the final result
    plain, none, _ = _run(tmp_path / "plain.pt")
    assert none is None and plain["accuracies"] == test["accuracies"]      # evaluating did not change training
    short, _, _ = _run(tmp_path / "short.pt", iterations=4)
    assert curve[1]["accuracies"] == short["accuracies"] and curve[1]["mean"] == short["mean"]


@pytest.mark.parametrize("kill_at", [3, 4])
def test_resumed_cell_neither_loses_nor_repeats_an_evaluation(tmp_path, kill_at):
    _, straight, _ = _run(tmp_path / "straight.pt", eval_at=[2, 4])
    with pytest.raises(_Kill):
        _run(tmp_path / "killed.pt", eval_at=[2, 4], kill_at=kill_at)
    _, resumed, evaluated = _run(tmp_path / "killed.pt", eval_at=[2, 4])
    assert evaluated == ([4] if kill_at == 3 else [])
    assert resumed == straight


def test_a_checkpoint_at_an_evaluation_point_restores_a_lost_snapshot(tmp_path):
    _, straight, _ = _run(tmp_path / "straight.pt", eval_at=[2, 4])
    with pytest.raises(_Kill):
        _run(tmp_path / "killed.pt", eval_at=[2, 4], kill_at=4)
    folder = curve_folder(tmp_path / "killed.pt")
    for name in ("at_4.pt", "at_4.json"):                 # as if killed between the checkpoint and the snapshot
        (folder / name).unlink()
    _, resumed, evaluated = _run(tmp_path / "killed.pt", eval_at=[2, 4])
    assert evaluated == [4] and resumed == straight
    (folder / "at_2.pt").unlink()
    (folder / "at_2.json").unlink()
    with pytest.raises(CheckpointUnusable, match="point at iteration 2 has no evaluation and no snapshot left"):
        _run(tmp_path / "killed.pt", eval_at=[2, 4])


def test_a_lost_curve_point_restarts_the_cell_and_gives_the_same_curve(tmp_path, monkeypatch):
    cell = expand(["curves"], "smoke", 1, {"eval_at": [2, 4], "iterations": 6, "checkpoint_every": 1},
                  only="maml")[0]
    assert run_cell(cell, RunOptions(str(tmp_path / "straight")))["status"] == "ran"
    straight = ResultStore(tmp_path / "straight").read(cell["name"])["test_curve"]
    original = CurveRecorder.on_iteration

    def interrupted(self, iteration):
        original(self, iteration)
        if iteration == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(CurveRecorder, "on_iteration", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_cell(cell, RunOptions(str(tmp_path / "killed")))
    monkeypatch.setattr(CurveRecorder, "on_iteration", original)
    points = list((tmp_path / "killed" / "checkpoints").rglob("at_2.*"))
    assert points
    for point in points:
        point.unlink()
    with pytest.warns(RepairWarning, match="iteration 2 has no evaluation.*restarting"):
        assert run_cell(cell, RunOptions(str(tmp_path / "killed")))["status"] == "ran"
    assert ResultStore(tmp_path / "killed").read(cell["name"])["test_curve"] == straight


def test_cell_json_keeps_the_curve(tmp_path):
    cells = expand(["curves"], "smoke", 1, {"eval_at": [4], "iterations": 8}, only="maml")
    assert run_cell(cells[0], RunOptions(str(tmp_path)))["status"] == "ran"
    result = ResultStore(tmp_path).read(cells[0]["name"])
    curve = result["test_curve"]
    assert [p["iteration"] for p in curve] == [4, 8]
    assert curve[-1]["mean"] == result["test"]["mean"]
    assert all(len(p["accuracies"]) == result["test"]["n_episodes"] for p in curve)
    assert json.loads(json.dumps(result))["config"]["protocol"]["eval_at"] == [4]


def test_bad_eval_at_is_one_clear_error():
    with pytest.raises(UserError, match="eval_at"):
        load_protocol("omniglot_20w1s", "smoke", {"eval_at": [0, 2]})
    with pytest.raises(UserError, match="eval_at"):
        load_protocol("omniglot_20w1s", "smoke", {"eval_at": 5})


def test_table_curves_on_the_smoke_preset(tmp_path, monkeypatch):
    from run_all import main
    import tables.figures.curves as curves_figure
    figures, save = [], curves_figure.save_figure
    monkeypatch.setattr(curves_figure, "save_figure", lambda fig, *args: figures.append(fig) or save(fig, *args))
    assert main(["--table", "curves", "--preset", "smoke", "--device", "cpu", "--results", str(tmp_path)]) == 0
    for ax in figures[0].axes:                      # a log axis ticked at the iterations evaluated, as numbers
        assert ax.get_xscale() == "log" and list(ax.get_xticks()) == [2, 4, 8]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "4", "8"]
    tables = tmp_path / "tables"
    assert all((tables / f"curves.{ext}").stat().st_size > 0 for ext in ("png", "pdf", "md"))
    markdown = (tables / "curves.md").read_text()
    results = ResultStore(tmp_path).all_results()
    assert len(results) == 3
    final = next(line for line in markdown.splitlines() if line.startswith("| 8 |"))
    for result in results.values():
        assert [p["iteration"] for p in result["test_curve"]] == [2, 4, 8]
        assert len({p["episodes"]["fingerprint"] for p in result["test_curve"]}) == 1
        assert f"{result['test']['mean']:.2f} ± {result['test']['ci95']:.2f}" in final
    assert "Holm p" in final
    assert "| Iterations | MAML (1 seed) |" in markdown and "− MAML (1 paired seed) |" in markdown


def test_a_cell_resumed_at_its_end_has_no_time_per_iteration(tmp_path):
    """Its checkpoint is at the last iteration: this process trains nothing, so no ms per iteration (it was a
    division by max(1, 0)); the code version is recorded with whether it is in main's history."""
    cell = expand(["curves"], "smoke", 1, {"iterations": 4}, only="maml")[0]
    assert run_cell(cell, RunOptions(str(tmp_path)))["status"] == "ran"
    store = ResultStore(tmp_path)
    first = store.read(cell["name"])
    assert first["timings"]["ms_per_iteration"] > 0 and "code_on_main" in first
    store.result_path(cell["name"]).unlink()                       # the result lost, the final checkpoint kept
    assert run_cell(cell, RunOptions(str(tmp_path)))["status"] == "ran"
    again = store.read(cell["name"])
    assert again["training"]["resumed_from"] == 4 and again["timings"]["ms_per_iteration"] is None
    assert again["test"]["accuracies"] == first["test"]["accuracies"]
