"""Float64: the vectorized inner loop equals the per-task loop, and meta-gradients of theta, phi and the
Meta-SGD learning rates equal central finite differences, for MAML and Meta-SGD, meta-dropout on and off."""
import dataclasses
import warnings

import pytest
import torch


from tests.meta_gradcheck import (TINY, assert_meta_gradients_match_fd, assert_vectorized_matches_reference,
                                  meta_gradients, tiny_episodes, tiny_learner)

CASES = [(alg, reg) for alg in ("maml", "metasgd") for reg in ("none", "meta_dropout")]

pytestmark = pytest.mark.usefixtures("cpu_kernels_at_every_size")  # the CPU kernels checked too

@pytest.mark.parametrize("algorithm,regularizer", CASES)
def test_vectorized_equals_reference(algorithm, regularizer):
    assert_vectorized_matches_reference(tiny_learner(regularizer, algorithm=algorithm), tiny_episodes())


def test_functorchs_missing_batching_rule_warning_is_filtered():
    """pyproject.toml drops functorch's warning that the batch-norm double backward's in-place addcmul_ has no
    batching rule (a slower loop under vmap; the vectorized path equals the reference, above), and only it."""
    with warnings.catch_warnings(record=True) as caught:
        meta_gradients(tiny_learner("none"), tiny_episodes(), "vectorized")
        warnings.warn("There is a performance drop because we have not yet implemented the batching rule for "
                      "aten::other_op", UserWarning)
    assert [str(w.message) for w in caught if "batching rule" in str(w.message)] == [
        "There is a performance drop because we have not yet implemented the batching rule for aten::other_op"]


@pytest.mark.parametrize("algorithm,regularizer", CASES)
def test_meta_gradients_match_finite_differences(algorithm, regularizer):
    learner = tiny_learner(regularizer, algorithm=algorithm)
    checked = assert_meta_gradients_match_fd(learner, tiny_episodes())
    assert any(n.startswith("theta/") for n in checked)
    if regularizer == "meta_dropout":
        assert any(n.startswith("meta/phi.") for n in checked)
    if algorithm == "metasgd":
        assert any(n.startswith("alpha/") for n in checked)


def test_mc_samples_vectorized_equals_reference():
    learner = tiny_learner("meta_dropout", mc_train=3)
    assert_vectorized_matches_reference(learner, tiny_episodes())


def test_phi_reaches_meta_gradient_only_through_second_order():
    """The logit-noise phi acts only on the support path: zero meta-gradient first-order, nonzero second-order.
    The conv phi also shapes the deterministic query path (softplus(mu)), so first-order it gets exactly that
    direct term, and second order adds the inner-loop term."""
    episodes = tiny_episodes()
    first = meta_gradients(tiny_learner("meta_dropout", first_order=True), episodes)[1]
    second = meta_gradients(tiny_learner("meta_dropout", first_order=False), episodes)[1]
    for name in ("meta/phi.head.weight", "meta/phi.head.bias"):
        assert torch.count_nonzero(first[name]) == 0
        assert second[name].abs().max() > 1e-8
    conv_phi = [n for n in first if n.startswith("meta/phi.conv")]
    assert conv_phi
    assert max((second[n] - first[n]).abs().max().item() for n in conv_phi) > 1e-8


def test_first_order_phi_gradient_is_the_query_path_only():
    """First order: phi's gradient equals the gradient through the query forward with adapted theta held fixed."""
    learner = tiny_learner("meta_dropout", first_order=True)
    episodes = tiny_episodes()
    first = meta_gradients(learner, episodes)[1]
    state = learner.noise_generator.get_state()
    adapted = learner.adapt(episodes.x_support, episodes.y_support, 1)
    learner.noise_generator.set_state(state)
    adapted = {n: v.detach() for n, v in adapted.items()}
    logits = learner.query_logits(adapted, episodes.x_query)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), episodes.y_query.flatten())
    phi = {n: p for n, p in learner.meta_only.items() if n.startswith("phi.conv")}
    direct = torch.autograd.grad(loss, list(phi.values()))
    for (n, _), g in zip(phi.items(), direct):
        torch.testing.assert_close(first[f"meta/{n}"], g, rtol=1e-10, atol=1e-13)


def _test_noise(learner, episodes, ids=(0, 1), seed=5):
    return learner.episode_noise(list(ids), episodes.x_support.shape[1], seed)


def test_meta_test_sample_chunks_give_the_same_adaptation():
    """Forwarding the S samples in chunks (meta-test memory), each chunk's noise drawn when used, computes the
    same inner gradients."""
    learner = tiny_learner("meta_dropout")
    episodes = tiny_episodes()
    whole = learner.adapt(episodes.x_support, episodes.y_support, 5, first_order=True,
                          noise_fn=_test_noise(learner, episodes))
    chunked = learner.adapt(episodes.x_support, episodes.y_support, 5, first_order=True, sample_chunk=2,
                            noise_fn=_test_noise(learner, episodes))
    for name in whole:
        torch.testing.assert_close(whole[name], chunked[name], rtol=1e-12, atol=1e-14)
    assert any((whole[n] - learner.adapted[n]).abs().max() > 1e-6 for n in whole)


@pytest.mark.parametrize("regularizer", ["meta_dropout", "mixup", "weight_gaussian"])
def test_test_noise_belongs_to_the_episode_not_the_batch_or_the_path(regularizer):
    """Episode 1 adapted alone, in a batch with episode 0, or by the per-task loop gets the same parameters; a
    different seed gives different noise."""
    learner = tiny_learner(regularizer)
    episodes = tiny_episodes()
    xs, ys = episodes.x_support, episodes.y_support
    batched = learner.adapt(xs, ys, 4, first_order=True, sample_chunk=3, noise_fn=_test_noise(learner, episodes))
    alone = learner.adapt(xs[1:], ys[1:], 4, first_order=True, noise_fn=_test_noise(learner, episodes, ids=(1,)))
    looped = learner.adapt(xs[1:], ys[1:], 4, vectorized=False, first_order=True,
                           noise_fn=_test_noise(learner, episodes, ids=(1,)))[0]
    other = learner.adapt(xs[1:], ys[1:], 4, first_order=True, noise_fn=_test_noise(learner, episodes, (1,), 6))
    for name in batched:
        torch.testing.assert_close(batched[name][1], alone[name][0], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(looped[name].detach(), alone[name][0], rtol=1e-10, atol=1e-12)
    assert any((other[n] - alone[n]).abs().max() > 1e-8 for n in alone)


def test_affine_batch_norm_is_adapted_and_its_gradients_are_right():
    """bn_mode 'affine': gamma and beta join theta (adapted in the inner loop); still exact."""
    spec = dataclasses.replace(TINY, bn_mode="affine")
    learner = tiny_learner("meta_dropout", algorithm="metasgd", spec=spec)
    assert {"bn1.gamma", "bn1.beta"} <= set(learner.adapted) and "bn1.beta" not in learner.meta_only
    episodes = tiny_episodes()
    assert_vectorized_matches_reference(learner, episodes)
    checked = assert_meta_gradients_match_fd(learner, episodes, prefixes=("theta/bn", "alpha/bn", "meta/phi.conv1"))
    assert "theta/bn2.gamma" in checked and "alpha/bn2.beta" in checked


def test_shift_batch_norm_is_meta_learned_only():
    learner = tiny_learner("none")
    assert "bn1.beta" in learner.meta_only and not any(n.startswith("bn") for n in learner.adapted)
    assert not any(n.startswith("bn") and n.endswith("gamma") for n in learner.meta_only)
