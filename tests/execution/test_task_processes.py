"""bench/execution/task_processes.py: the per-task path on several processes gives the per-task path's numbers at one
thread bit for bit (every regularizer, MAML and Meta-SGD, float32 and float64, more tasks than processes), a worker's
failure surfaces with its traceback, a message cut short reads as a closed pipe, a failure here closes the pool, and
meta_train with the CPU executor and two threads trains on two processes to the same parameters as with one thread."""
import dataclasses
import io
import pickle

import pytest
import torch

from bench.data.synthetic import synthetic_bank
from bench.data.episodes import EpisodeSampler, Episodes
from bench.core.learner import LearnerConfig, MetaLearner
from bench.core.meta_gradient import meta_gradients
from bench.execution.cpu import CpuExecutor, pool_size
from bench.execution.task_processes import TaskProcessPool, _receive, _send
from bench.util.devices import intra_op_threads
from bench.core.train import meta_train
from regularizers import REGISTRY, build_regularizer

from tests.meta_gradcheck import TINY, tiny_episodes, tiny_learner


def _per_task_learner(regularizer: str, algorithm: str = "maml", dtype: torch.dtype = torch.float64) -> MetaLearner:
    learner = tiny_learner(regularizer, algorithm=algorithm, dtype=dtype)
    learner.config = dataclasses.replace(learner.config, execution="per_task")
    return learner


def _same(a: tuple, b: tuple) -> bool:
    return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and all(torch.equal(x, y) for x, y in zip(a[2], b[2]))


def _one_process_then_pool(learner: MetaLearner, episodes: Episodes, processes: int) -> tuple[tuple, tuple]:
    state = learner.noise_generator.get_state()
    with intra_op_threads(1):
        alone = meta_gradients(learner, episodes)
    learner.noise_generator.set_state(state)
    with TaskProcessPool(learner, processes) as pool:
        pooled = pool.meta_gradients(learner, episodes)
    return alone, pooled


@pytest.mark.parametrize("algorithm,regularizer", [("maml", "none"), ("maml", "meta_dropout"),
                                                   ("metasgd", "meta_dropout")])
def test_pool_equals_the_per_task_path_bit_for_bit(algorithm, regularizer):
    for dtype in (torch.float64, torch.float32):
        learner = _per_task_learner(regularizer, algorithm, dtype)
        episodes = tiny_episodes(batch=3)
        episodes = Episodes(*(t.to(dtype) if t.is_floating_point() else t for t in dataclasses.astuple(episodes)))
        alone, pooled = _one_process_then_pool(learner, episodes, 2)          # shares of 2 and 1 tasks
        assert _same(alone, pooled), (algorithm, regularizer, dtype)
        assert any(g.abs().max() > 0 for g in pooled[2])


def test_every_regularizer_runs_on_the_pool():
    """Each registered regularizer travels to a worker (pickled) and gives the one-process numbers."""
    for name in sorted(REGISTRY):
        pickle.dumps(build_regularizer(name))
        learner = _per_task_learner(name)
        alone, pooled = _one_process_then_pool(learner, tiny_episodes(), 2)
        assert _same(alone, pooled), name


def test_worker_failure_is_raised_with_its_traceback():
    learner = _per_task_learner("none")
    with TaskProcessPool(learner, 2) as pool:
        good = tiny_episodes(batch=2)
        bad = Episodes(good.x_support, good.y_support, good.x_query, good.y_query.clone())
        bad.y_query[1, 0] = 99                        # task 1, the worker's: a label out of range
        with pytest.raises(RuntimeError, match="(?s)a task process failed.*out of bounds"):
            pool.meta_gradients(learner, bad)


def test_a_message_cut_short_reads_as_a_closed_pipe():
    """Messages are pickled straight through the pipe: a whole one comes back equal, and one cut at any byte
    (a process that died mid-message) reads as EOFError, which the pool reports with the exit code."""
    message = (["values", torch.arange(50000.0)], {"noise": torch.ones(3, 4)}, 4)
    stream = io.BytesIO()
    _send(stream, message)
    data = stream.getvalue()
    back = _receive(io.BytesIO(data))
    assert torch.equal(back[0][1], message[0][1]) and torch.equal(back[1]["noise"], message[1]["noise"])
    for cut in (0, 1, len(data) // 3, len(data) - 1):
        with pytest.raises(EOFError, match="closed the pipe"):
            _receive(io.BytesIO(data[:cut]))


def test_a_failure_in_this_process_closes_the_pool():
    """Task 0 is this process's: after its error the pool is closed, not left with the workers' answers
    unread."""
    learner = _per_task_learner("none")
    good = tiny_episodes(batch=2)
    bad = Episodes(good.x_support, good.y_support, good.x_query, good.y_query.clone())
    bad.y_query[0, 0] = 99
    with TaskProcessPool(learner, 2) as pool:
        with pytest.raises(IndexError):
            pool.meta_gradients(learner, bad)
        assert pool.pids == []


def test_pool_size_follows_threads_and_path():
    learner = _per_task_learner("none")
    with intra_op_threads(2):
        assert pool_size(learner, 4) == 2
        assert pool_size(learner, 1) == 1
        learner.config = dataclasses.replace(learner.config, execution="vectorized")
        assert pool_size(learner, 4) == 1
    with intra_op_threads(1):
        assert pool_size(_per_task_learner("none"), 4) == 1


def _train(threads: int) -> tuple[list[torch.Tensor], dict]:
    config = LearnerConfig(inner_steps=2, execution="per_task")
    learner = MetaLearner(TINY, build_regularizer("meta_dropout"), config, seed=5, dtype=torch.float32)
    bank = synthetic_bank(6, 6, (1, 16, 16), seed=0)
    sampler = EpisodeSampler(bank, TINY.ways, 1, 2, seed=1)
    with intra_op_threads(threads):
        summary = meta_train(learner, sampler, iterations=3, meta_lr=1e-3, meta_batch=3, progress=False,
                             log_every=1, executor=CpuExecutor())
    return [p.detach().clone() for p in learner.parameters()], summary


def test_meta_train_on_two_processes_equals_one_thread():
    one, one_summary = _train(1)
    two, two_summary = _train(2)
    assert one_summary["task_processes"] == 1 and two_summary["task_processes"] == 2
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    assert one_summary["curve"] == two_summary["curve"]
