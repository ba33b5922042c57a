"""The CPU meta-test route with the S samples as one batch (bench/execution/samples_as_batch.py) adapts exactly as the
vectorized path, in float64, for every regularizer that allows it, whole or in sample chunks; batch norm with
groups normalizes each group by its own statistics; meta_test records the route."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from bench.core.evaluate import meta_test
from bench.core.executor import Executor
from bench.core.noise import EpisodeNoise
from bench.data.episodes import EpisodeSampler
from bench.execution.cpu import CpuExecutor
from bench.execution.samples_as_batch import adapt_samples_as_batch
from bench.ops.dispatch import KernelPlan, select_ops
from regularizers import REGISTRY
from regularizers.meta_dropout import MetaDropout
from tests.meta_gradcheck import tiny_episodes, tiny_learner

AS_BATCH = sorted(name for name, cls in REGISTRY.items() if cls.acts_per_example and cls.draws_noise)
HYPER = {"independent_gaussian": {"noise_shape": "channel"}}
pytestmark = pytest.mark.usefixtures("cpu_kernels_at_every_size")  # the CPU kernels checked too


def test_the_regularizers_that_allow_it():
    assert {"meta_dropout", "fixed_gaussian", "independent_gaussian", "meta_dropout_additive",
            "meta_dropout_learned_variance"} <= set(AS_BATCH)
    assert not {"mixup", "weight_gaussian", "vib", "information_dropout", "fgsm"} & set(AS_BATCH)


def test_grouped_batch_norm_normalizes_each_group_alone():
    torch.manual_seed(0)
    n, groups = 3, 4
    x = torch.randn(n * groups, 5, 6, 6, dtype=torch.float64)
    beta = torch.randn(5, dtype=torch.float64)
    ops = select_ops("cpu", KernelPlan(outside_vmap=True, sample_groups=groups))
    ours = ops.batch_norm(x, beta, None, 1e-3).view(n, groups, 5, 6, 6)
    for g in range(groups):
        alone = F.batch_norm(x.view(n, groups, 5, 6, 6)[:, g], None, None, torch.ones(5, dtype=torch.float64),
                             beta, training=True, eps=1e-3)
        torch.testing.assert_close(ours[:, g], alone, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("chunk", [None, 3])
@pytest.mark.parametrize("regularizer", AS_BATCH)
def test_samples_as_batch_adapts_as_the_vectorized_path(regularizer, chunk):
    learner = tiny_learner(regularizer, HYPER.get(regularizer))
    episodes = tiny_episodes()
    xs, ys = episodes.x_support, episodes.y_support

    def noise() -> EpisodeNoise:
        return learner.episode_noise([0, 1], xs.shape[1], seed=5)
    vectorized = learner.adapt(xs, ys, 5, first_order=True, sample_chunk=chunk, noise_fn=noise())
    as_batch = adapt_samples_as_batch(learner.spec, learner.reg, learner.ops.plan, learner.adapted, learner.meta_only,
                                      learner.lrs(), xs, learner.one_hot(ys), noise(), 5, learner.config.inner_steps,
                                      chunk)
    moved = False
    for name in vectorized:
        torch.testing.assert_close(as_batch[name], vectorized[name], rtol=1e-11, atol=1e-13)
        moved |= bool((as_batch[name] - learner.adapted[name]).abs().max() > 1e-6)
    assert moved


def test_meta_test_records_its_route_and_gives_the_same_accuracies():
    learner = tiny_learner("meta_dropout")
    learner.config = dataclasses.replace(learner.config, mc_test=4)
    episodes = tiny_episodes(batch=3)

    class Fixed(EpisodeSampler):
        def __init__(self):
            pass

        def sample(self, batch: int):
            return type(episodes)(*(t[:batch] for t in (episodes.x_support, episodes.y_support,
                                                        episodes.x_query, episodes.y_query)))
    as_batch = meta_test(learner, Fixed(), episodes=1, batch=1, progress=False, executor=CpuExecutor())
    assert as_batch["adaptation"] == "samples_as_batch"
    vectorized = meta_test(learner, Fixed(), episodes=1, batch=1, progress=False, executor=Executor())
    assert vectorized["adaptation"] == "vectorized"
    assert as_batch["accuracies"] == vectorized["accuracies"]


def test_example_major_noise_is_the_same_draws_transposed():
    learner = tiny_learner("meta_dropout")
    n = tiny_episodes().x_support.shape[1]
    sample_major = learner.episode_noise([0, 1], n, seed=3)
    example_major = learner.episode_noise([0, 1], n, seed=3)
    for step, (first, end) in enumerate([(0, 3), (3, 5)]):
        drawn, flat = sample_major(step, first, end), example_major.example_major(step, first, end)
        assert drawn.keys() == flat.keys() and drawn
        for name, v in drawn.items():
            assert torch.equal(flat[name], v.transpose(1, 2).flatten(1, 2)), name


class _LogitNoiseOnly(MetaDropout):
    """Meta-dropout's noise on the logits only: block 1's hook leaves the conv output as it is, so the backbone
    expands each example's output to its S samples itself."""

    name = "logit_noise_only_test"

    def on_preactivation(self, block, h_in, f, ctx):
        return f


def test_samples_as_batch_expands_an_untouched_first_block(monkeypatch):
    learner = tiny_learner("meta_dropout")
    learner.reg = _LogitNoiseOnly()
    episodes = tiny_episodes()
    xs, ys = episodes.x_support, episodes.y_support

    def noise() -> EpisodeNoise:
        return learner.episode_noise([0, 1], xs.shape[1], seed=6)
    vectorized = learner.adapt(xs, ys, 4, first_order=True, noise_fn=noise())
    as_batch = adapt_samples_as_batch(learner.spec, learner.reg, learner.ops.plan, learner.adapted, learner.meta_only,
                                      learner.lrs(), xs, learner.one_hot(ys), noise(), 4, learner.config.inner_steps,
                                      None)
    for name in vectorized:
        torch.testing.assert_close(as_batch[name], vectorized[name], rtol=1e-11, atol=1e-13)
    assert any((as_batch[n] - learner.adapted[n]).abs().max() > 1e-6 for n in as_batch)
