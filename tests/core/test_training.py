"""Meta-training: a killed and resumed run is bit-identical to an uninterrupted one; NaN stops clearly;
meta-test statistics."""
import numpy as np
import pytest
import torch

from bench.api import build_experiment
from bench.core.evaluate import confidence_interval
from bench.store.protocol import load_protocol
from bench.core.train import TrainingDiverged

TINY = {"iterations": 6, "checkpoint_every": 2, "test_episodes": 6, "test_batch": 3}


def _experiment(regularizer="meta_dropout", **overrides):
    protocol = load_protocol("omniglot_20w1s", "smoke", {**TINY, **overrides})
    return build_experiment(protocol, "maml", regularizer, seed=0)


class _Kill(Exception):
    pass


def _kill_at(iteration):
    def hook(it):
        if it == iteration:
            raise _Kill
    return hook


@pytest.mark.parametrize("kill_at", [3, 4])
def test_resume_after_kill_is_bit_identical(tmp_path, kill_at):
    straight = _experiment()
    straight.train(tmp_path / "a.pt", progress=False)
    interrupted = _experiment()
    with pytest.raises(_Kill):
        interrupted.train(tmp_path / "b.pt", progress=False, on_iteration=_kill_at(kill_at))
    resumed = _experiment()                       # a fresh process would rebuild everything like this
    summary = resumed.train(tmp_path / "b.pt", progress=False)
    assert summary["resumed_from"] == (kill_at // 2) * 2
    for name, value in straight.learner.named_parameters().items():
        assert torch.equal(value, resumed.learner.named_parameters()[name]), name
    assert summary["curve"] == straight.train_summary["curve"]
    assert straight.test(progress=False)["accuracies"] == resumed.test(progress=False)["accuracies"]


def test_nan_loss_stops_with_the_iteration(tmp_path):
    experiment = _experiment(regularizer="none")
    with torch.no_grad():
        experiment.learner.adapted["head.weight"].fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="iteration 1"):
        experiment.train(progress=False)


def test_confidence_interval_uses_population_std():
    acc = np.array([50.0, 60.0, 70.0, 80.0])
    mean, ci, std = confidence_interval(acc)
    assert mean == 65.0
    assert std == pytest.approx(np.sqrt(125.0))
    assert ci == pytest.approx(1.96 * np.sqrt(125.0) / 2)


def test_meta_test_keeps_every_episode_and_is_seeded():
    experiment = _experiment()
    first = experiment.test(episodes=7, progress=False)
    again = experiment.test(episodes=7, progress=False)
    assert len(first["accuracies"]) == first["n_episodes"] == 7
    assert first["accuracies"] == again["accuracies"]
    assert all(0.0 <= a <= 100.0 for a in first["accuracies"])
    assert first["mean"] == pytest.approx(np.mean(first["accuracies"]))


@pytest.mark.parametrize("execution, module, function", [("reference", "bench.core.learner", "adapt_reference"),
                                                         ("per_task", "bench.core.meta_gradient", "adapt_task"),
                                                         ("vectorized", "bench.core.learner", "adapt_vectorized")])
def test_execution_path_is_chosen_by_a_protocol_flag(monkeypatch, execution, module, function):
    calls = []
    target = __import__(module, fromlist=[function])
    original = getattr(target, function)

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, function, spy)
    experiment = _experiment(regularizer="none", execution=execution, iterations=2)
    summary = experiment.train(progress=False)
    assert calls and summary["execution"] == execution == experiment.learner.config.execution
    assert summary["cuda_graph"] is False


def test_auto_execution_is_per_task_on_the_cpu():
    assert _experiment(regularizer="none").learner.config.execution == "per_task"
