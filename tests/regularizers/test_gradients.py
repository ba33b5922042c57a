"""Float64, per regularizer: the vectorized inner loop equals the per-task loop, and the meta-gradients of a
theta tensor and of the regularizer's own parameters equal finite differences (noise held fixed)."""
import pytest
import torch

from bench.core.attacks import PixelSpace
from tests.meta_gradcheck import (assert_meta_gradients_match_fd, assert_vectorized_matches_reference,
                                  meta_gradients, tiny_episodes, tiny_learner)

THETA = "theta/conv2.weight"
# the regularizer's own parameters to check by finite differences (a few, to keep the file fast)
OWN = {
    "fixed_gaussian": (),
    "independent_gaussian": ("meta/phi.mu2",),
    "weight_gaussian": ("meta/phi.rho.conv1.weight",),
    "deterministic_meta_dropout": ("meta/phi.conv2.weight",),
    "meta_dropout_learned_variance": ("meta/phi.sigma.conv2.weight",),
    "meta_dropout_additive": ("meta/phi.conv3.weight",),
    "mixup": (),
    "vib": ("theta/vib.conv2.weight",),
    "information_dropout": ("theta/info.conv2.weight",),
    "fgsm": (),
}
METASGD = {"vib": ("alpha/vib.conv1.weight", "alpha/conv2.weight")}
MC_SAMPLES = ("mixup", "weight_gaussian")

pytestmark = pytest.mark.usefixtures("cpu_kernels_at_every_size")  # the CPU kernels checked too

@pytest.mark.parametrize("regularizer", sorted(OWN))
def test_vectorized_equals_reference(regularizer):
    assert_vectorized_matches_reference(tiny_learner(regularizer), tiny_episodes())


@pytest.mark.parametrize("regularizer", MC_SAMPLES)
def test_mc_samples_vectorized_equals_reference(regularizer):
    assert_vectorized_matches_reference(tiny_learner(regularizer, mc_train=3), tiny_episodes())


@pytest.mark.parametrize("regularizer", sorted(METASGD))
def test_metasgd_vectorized_equals_reference(regularizer):
    assert_vectorized_matches_reference(tiny_learner(regularizer, algorithm="metasgd"), tiny_episodes())


@pytest.mark.parametrize("regularizer", sorted(OWN))
def test_maml_meta_gradients_match_finite_differences(regularizer):
    prefixes = (THETA, *OWN[regularizer])
    checked = assert_meta_gradients_match_fd(tiny_learner(regularizer), tiny_episodes(), prefixes)
    assert len(checked) == len(prefixes)


@pytest.mark.parametrize("regularizer", sorted(METASGD))
def test_metasgd_meta_gradients_match_finite_differences(regularizer):
    prefixes = (*OWN[regularizer], *METASGD[regularizer])
    learner = tiny_learner(regularizer, algorithm="metasgd")
    checked = assert_meta_gradients_match_fd(learner, tiny_episodes(), prefixes)
    assert len(checked) == len(prefixes)


@pytest.mark.parametrize("regularizer", sorted(n for n, own in OWN.items() if own))
def test_own_parameters_get_a_meta_gradient(regularizer):
    """Every tensor the regularizer adds is reached by the meta-gradient (second order for the meta-only ones)."""
    learner = tiny_learner(regularizer)
    base = set(tiny_learner("none").named_parameters())
    grads = meta_gradients(learner, tiny_episodes())[1]
    own = [n for n in grads if n not in base]
    assert own
    for name in own:
        assert grads[name].abs().max() > 1e-10, name


# switches that create new gradient paths (issue 13): the noise's shape, the additive formula without softplus,
# and the attack in other norms and unclamped (no new path: the attack is data, so vectorized = reference only)
VARIANTS = [
    ("independent_gaussian", {"noise_shape": "channel"}, ("meta/phi.mu2",)),
    ("meta_dropout_additive", {"softplus": False}, ("meta/phi.conv3.weight", "meta/phi.head.weight")),
    ("weight_gaussian", {"sigma_init": 1e-3, "sigma_relative": False}, ("meta/phi.rho.head.weight",)),
]
ATTACKS = [{"norm": "l2"}, {"norm": "l1"}, {"norm": "linf"}, {"norm": "l2", "clamp": False}]


@pytest.mark.parametrize("regularizer,hyper,own", VARIANTS)
def test_variant_vectorized_equals_reference(regularizer, hyper, own):
    assert_vectorized_matches_reference(tiny_learner(regularizer, hyper, mc_train=2), tiny_episodes())


@pytest.mark.parametrize("regularizer,hyper,own", VARIANTS)
def test_variant_meta_gradients_match_finite_differences(regularizer, hyper, own):
    prefixes = (THETA, *own)
    checked = assert_meta_gradients_match_fd(tiny_learner(regularizer, hyper), tiny_episodes(), prefixes)
    assert len(checked) == len(prefixes)


@pytest.mark.parametrize("hyper", ATTACKS)
def test_attack_variant_vectorized_equals_reference(hyper):
    """In a pixel space with a range that the random inputs exceed, so that clamping acts."""
    learner = tiny_learner("fgsm", hyper)
    one = torch.ones((), dtype=torch.float64)
    learner.reg.bind_pixels(PixelSpace(0.5 * one, -one, one))
    assert_vectorized_matches_reference(learner, tiny_episodes())
