"""Float64, for every registered regularizer (and each of its test_variants): the vectorized inner loop and the
per-task backward equal the per-task reference loop, and the meta-gradients of a theta tensor and of one tensor of
each family of parameters the regularizer adds equal finite differences (noise held fixed). A new regularizer is
checked here without any edit; FGSM's attacks in every norm are checked as data."""
import re

import pytest
import torch

from bench.data.pixels import PixelSpace
from regularizers import REGISTRY
from tests.meta_gradcheck import (assert_meta_gradients_match_fd, assert_vectorized_matches_reference,
                                  meta_gradients, tiny_episodes, tiny_learner)

THETA = "theta/conv2.weight"
SETTINGS = [(name, None) for name in sorted(REGISTRY)] + [
    (name, variant) for name in sorted(REGISTRY) for variant in REGISTRY[name].test_variants]
NOISY = [name for name in sorted(REGISTRY) if REGISTRY[name].draws_noise]

pytestmark = pytest.mark.usefixtures("cpu_kernels_at_every_size")  # the CPU kernels checked too


def own_parameters(regularizer: str, hyper: dict | None = None, algorithm: str = "maml") -> list[str]:
    """One weight-like tensor per family of the parameters the regularizer adds (its block index and the
    .weight / .bias suffix removed: phi.conv1.weight and phi.conv3.weight are one family)."""
    base = set(tiny_learner("none", algorithm=algorithm).named_parameters())
    own = sorted(set(tiny_learner(regularizer, hyper, algorithm=algorithm).named_parameters()) - base)
    families: dict[str, str] = {}
    for name in sorted(own, key=lambda n: (not n.endswith("weight"), n)):
        families.setdefault(re.sub(r"\d+|\.weight$|\.bias$", "", name), name)
    return sorted(families.values())


def _id(setting: tuple[str, dict | None]) -> str:
    name, variant = setting
    return name if variant is None else f"{name}-{'-'.join(f'{k}={v}' for k, v in variant.items())}"


@pytest.mark.parametrize("setting", SETTINGS, ids=_id)
def test_vectorized_equals_reference(setting):
    assert_vectorized_matches_reference(tiny_learner(*setting), tiny_episodes())


@pytest.mark.parametrize("regularizer", NOISY)
def test_mc_samples_vectorized_equals_reference(regularizer):
    assert_vectorized_matches_reference(tiny_learner(regularizer, mc_train=3), tiny_episodes())


@pytest.mark.parametrize("setting", SETTINGS, ids=_id)
def test_maml_meta_gradients_match_finite_differences(setting):
    prefixes = (THETA, *own_parameters(*setting))
    checked = assert_meta_gradients_match_fd(tiny_learner(*setting), tiny_episodes(), prefixes)
    assert len(checked) == len(prefixes)


ADAPTED = [name for name in sorted(REGISTRY) if any(n.startswith("alpha/") for n in own_parameters(name, None,
                                                                                                    "metasgd"))]


@pytest.mark.parametrize("regularizer", ADAPTED)
def test_metasgd_vectorized_equals_reference(regularizer):
    assert_vectorized_matches_reference(tiny_learner(regularizer, algorithm="metasgd"), tiny_episodes())


@pytest.mark.parametrize("regularizer", ADAPTED)
def test_metasgd_meta_gradients_match_finite_differences(regularizer):
    """The alphas of the parameters a regularizer adapts in the inner loop, and theta's."""
    prefixes = (*own_parameters(regularizer, None, "metasgd"), "alpha/conv2.weight")
    checked = assert_meta_gradients_match_fd(tiny_learner(regularizer, algorithm="metasgd"), tiny_episodes(),
                                             prefixes)
    assert len(checked) == len(prefixes)


@pytest.mark.parametrize("regularizer", sorted(n for n in REGISTRY if own_parameters(n)))
def test_own_parameters_get_a_meta_gradient(regularizer):
    """Every tensor the regularizer adds is reached by the meta-gradient (second order for the meta-only ones)."""
    learner = tiny_learner(regularizer)
    base = set(tiny_learner("none").named_parameters())
    grads = meta_gradients(learner, tiny_episodes())[1]
    own = [n for n in grads if n not in base]
    assert own
    for name in own:
        assert grads[name].abs().max() > 1e-10, name


def test_the_paper_regularizers_are_checked():
    """The families whose gradients these tests must cover, and the switches that open new gradient paths."""
    assert {"meta_dropout", "fixed_gaussian", "independent_gaussian", "weight_gaussian", "deterministic_meta_dropout",
            "meta_dropout_learned_variance", "meta_dropout_additive", "mixup", "vib", "information_dropout",
            "fgsm"} <= set(REGISTRY)
    assert {"vib", "information_dropout"} <= set(ADAPTED)
    variants = {name for name, variant in SETTINGS if variant}
    assert {"independent_gaussian", "meta_dropout_additive", "weight_gaussian"} <= variants
    assert own_parameters("meta_dropout_learned_variance") == ["meta/phi.conv1.weight", "meta/phi.head.weight",
                                                               "meta/phi.sigma.conv1.weight"]


ATTACKS = [{"norm": "l2"}, {"norm": "l1"}, {"norm": "linf"}, {"norm": "l2", "clamp": False}]


@pytest.mark.parametrize("hyper", ATTACKS)
def test_attack_variant_vectorized_equals_reference(hyper):
    """FGSM's attack is data (no new gradient path: vectorized = reference only), in a pixel space with a range
    that the random inputs exceed, so that clamping acts."""
    learner = tiny_learner("fgsm", hyper)
    one = torch.ones((), dtype=torch.float64)
    learner.reg.bind_pixels(PixelSpace(0.5 * one, -one, one))
    assert_vectorized_matches_reference(learner, tiny_episodes())
