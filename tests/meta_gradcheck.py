"""Float64 checks shared by the core and regularizer tests: every execution path (vectorized, per_task, reference)
gives the same loss and meta-gradients, and they equal finite differences, with the noise held fixed by restoring
the learner's noise generator."""
from __future__ import annotations

from typing import Any

import torch

from bench.core.backbone import BackboneSpec
from bench.data.episodes import Episodes
from bench.core.learner import EXECUTIONS, LearnerConfig, MetaLearner
from bench.core.meta_gradient import meta_gradients as execution_meta_gradients
from bench.ops.dispatch import KernelPlan
from regularizers import build_regularizer

TINY = BackboneSpec(in_channels=1, image_size=16, channels=4, ways=3)


def tiny_learner(regularizer: str, hyper: dict[str, Any] | None = None, algorithm: str = "maml",
                 first_order: bool = False, spec: BackboneSpec = TINY, mc_train: int = 1,
                 dtype: torch.dtype = torch.float64, plan: KernelPlan = KernelPlan()) -> MetaLearner:
    """A learner (float64 unless told) on a 16x16 conv4 of width 4, two inner steps."""
    config = LearnerConfig(algorithm=algorithm, inner_lr=0.1, inner_steps=2, first_order=first_order,
                           mc_train=mc_train)
    return MetaLearner(spec, build_regularizer(regularizer, hyper), config, seed=3, dtype=dtype, plan=plan)


def tiny_episodes(spec: BackboneSpec = TINY, batch: int = 2, shots: int = 2, queries: int = 3,
                  seed: int = 0) -> Episodes:
    """Random float64 episodes with a learnable signal (class-dependent mean)."""
    gen = torch.Generator().manual_seed(seed)
    n = spec.ways
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    centers = torch.randn(batch, n, *shape, generator=gen, dtype=torch.float64)

    def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n).repeat_interleave(per_class).expand(batch, -1)
        x = centers[torch.arange(batch).unsqueeze(1), y] + 0.5 * torch.randn(
            batch, n * per_class, *shape, generator=gen, dtype=torch.float64)
        return x, y

    xs, ys = draw(shots)
    xq, yq = draw(queries)
    return Episodes(xs, ys, xq, yq)


def loss_with_fixed_noise(learner: MetaLearner, episodes: Episodes, vectorized: bool = True) -> torch.Tensor:
    """The meta-loss with the noise generator rewound, so every call sees the same noise."""
    state = learner.noise_generator.get_state()
    loss, _ = learner.meta_loss(episodes.x_support, episodes.y_support, episodes.x_query, episodes.y_query,
                                vectorized=vectorized)
    learner.noise_generator.set_state(state)
    return loss


def meta_gradients(learner: MetaLearner, episodes: Episodes,
                   execution: str = "vectorized") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, unclipped meta-gradients by name) of one execution path, the noise generator rewound after."""
    state = learner.noise_generator.get_state()
    loss, _, grads = execution_meta_gradients(learner, episodes, execution)
    learner.noise_generator.set_state(state)
    return loss.detach(), dict(zip(learner.named_parameters(), grads))


def assert_vectorized_matches_reference(learner: MetaLearner, episodes: Episodes) -> None:
    """Loss and every meta-gradient of the vmap path and of the per-task backward equal the per-task reference
    loop (float64)."""
    slow, g_slow = meta_gradients(learner, episodes, "reference")
    for execution in EXECUTIONS:
        fast, g_fast = meta_gradients(learner, episodes, execution)
        torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12, msg=execution)
        for name in g_fast:
            torch.testing.assert_close(g_fast[name], g_slow[name], rtol=1e-8, atol=1e-11,
                                       msg=f"{execution}: {name}")


def directional_fd(learner: MetaLearner, episodes: Episodes, param: torch.Tensor, direction: torch.Tensor,
                   steps: tuple[float, ...] = (1e-5, 1e-6, 1e-7, 1e-8)) -> float:
    """Central difference of the meta-loss along `direction`, at the largest step where it is smooth.

    The second-order MAML loss with ReLU and max pool is only piecewise smooth: the inner gradient jumps where
    an activation crosses a kink, so the loss jumps too. A step is accepted where the forward and backward
    differences agree (no jump inside [p - h, p + h]); failing everywhere fails the test."""
    with torch.no_grad():
        base = loss_with_fixed_noise(learner, episodes).item()
        for h in steps:
            param.add_(h * direction)
            plus = loss_with_fixed_noise(learner, episodes).item()
            param.sub_(2 * h * direction)
            minus = loss_with_fixed_noise(learner, episodes).item()
            param.add_(h * direction)
            forward, backward = (plus - base) / h, (base - minus) / h
            if abs(forward - backward) <= 2e-5 * (1 + abs(forward)):
                return (plus - minus) / (2 * h)
    raise AssertionError("the meta-loss is not smooth at any finite-difference step")


def assert_meta_gradients_match_fd(learner: MetaLearner, episodes: Episodes, prefixes: tuple[str, ...] = ("",),
                                   seed: int = 0) -> list[str]:
    """Each named parameter's meta-gradient, projected on a random direction, equals a central difference, on
    every execution path. Returns the names checked."""
    by_path = {execution: meta_gradients(learner, episodes, execution)[1] for execution in EXECUTIONS}
    gen = torch.Generator().manual_seed(seed)
    checked = []
    for name, param in learner.named_parameters().items():
        if not name.startswith(prefixes):
            continue
        direction = torch.randn(param.shape, generator=gen, dtype=param.dtype)
        numeric = directional_fd(learner, episodes, param, direction)
        for execution, grads in by_path.items():
            analytic = (grads[name] * direction).sum().item()
            assert abs(numeric - analytic) <= 1e-5 * (1 + abs(numeric)), (execution, name, numeric, analytic)
        checked.append(name)
    return checked
