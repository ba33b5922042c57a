"""The fast path is the default, chosen per device in one place: a learner's execution 'auto' resolves to a
backward per task on the CPU and vmap over tasks on a GPU; executor_for gives the CPU executor on the CPU; the
core's own executor runs the learner's execution; build_experiment uses executor_for."""
import pytest
import torch

from bench.api import build_experiment
from bench.core.executor import Executor
from bench.core.learner import LearnerConfig, MetaLearner, resolve_execution
from bench.execution import executor_for
from bench.execution.cpu import CpuExecutor
from bench.store.protocol import load_protocol
from bench.util.errors import UserError
from regularizers import build_regularizer
from tests.meta_gradcheck import TINY


def test_auto_is_the_default_and_resolves_per_device():
    assert LearnerConfig().execution == "auto"
    assert resolve_execution("auto", "cpu") == "per_task"
    assert resolve_execution("auto", "cuda") == "vectorized"
    assert resolve_execution("reference", "cpu") == "reference"
    learner = MetaLearner(TINY, build_regularizer("none"), LearnerConfig(), seed=0)
    assert learner.config.execution == "per_task"


def test_executor_for_picks_the_cpu_executor_and_build_experiment_uses_it():
    learner = MetaLearner(TINY, build_regularizer("meta_dropout"), LearnerConfig(), seed=0)
    assert isinstance(executor_for(learner), CpuExecutor)
    exp = build_experiment(load_protocol("omniglot_20w1s", "smoke"), regularizer="meta_dropout")
    assert isinstance(exp.executor, CpuExecutor)
    assert exp.executor.test_batch(25) == 1 and Executor().test_batch(25) == 25
    assert exp.executor.test_route(exp.learner, 30) == "samples_as_batch"


def test_cuda_graph_on_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    learner = MetaLearner(TINY, build_regularizer("none"), LearnerConfig(), seed=0)
    with pytest.raises(UserError, match="needs --device cuda"):
        executor_for(learner, cuda_graph="on")
