"""Behaviour of the regularizers of Tables 2-3 and Figure 5: registry and hyper-parameter errors, randomness,
query path, KL terms, mixup's Beta draws and mixing, FGSM."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from scipy import stats
from torch.func import vmap

from bench.core.attacks import fast_gradient
from bench.data.pixels import PixelSpace
from bench.core.backbone import forward
from bench.util.errors import UserError
from bench.core.regularizer import ForwardContext
from bench.core.inner_loop import query_logits, soft_cross_entropy
from regularizers import REGISTRY, build_regularizer
from regularizers.mixup import MIX_LAYERS
from tests.meta_gradcheck import TINY, tiny_episodes, tiny_learner

REPO = Path(__file__).resolve().parents[2]
PAPER = ["none", "meta_dropout", "fixed_gaussian", "independent_gaussian", "weight_gaussian",
         "deterministic_meta_dropout", "meta_dropout_learned_variance", "meta_dropout_additive", "mixup", "vib",
         "information_dropout", "fgsm"]
GAUSSIAN_NOISE = ["meta_dropout", "fixed_gaussian", "independent_gaussian", "weight_gaussian",
                  "meta_dropout_learned_variance", "meta_dropout_additive", "vib", "information_dropout"]


def params_of(learner) -> dict[str, torch.Tensor]:
    return {**learner.adapted, **learner.meta_only}


def episode(task: int = 0):
    ep = tiny_episodes()
    return ep.x_support[task], F.one_hot(ep.y_support[task], TINY.ways).double(), ep.x_query[task], ep.y_query[task]


def one_sample_noise(learner, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    noise = learner.reg.sample_noise(TINY, n, (1,), gen, torch.device("cpu"), torch.float64)
    return {k: v[0] for k, v in noise.items()}


def support_forward(learner, x, targets, noise) -> tuple[torch.Tensor, ForwardContext]:
    ctx = ForwardContext(params_of(learner), noise, targets, learner.ops)
    return forward(TINY, ctx.params, x, learner.reg, ctx), ctx


# --- registry and hyper-parameters -------------------------------------------------------------------------

def test_every_table_row_builds():
    for table in ("table2", "table3", "fig5"):
        for row in yaml.safe_load((REPO / "configs" / "tables" / f"{table}.yaml").read_text())["rows"]:
            reg = build_regularizer(row["regularizer"], row.get("hyper", {}))
            assert reg.hyper == {**reg.hyper_defaults, **row.get("hyper", {})}
    assert set(PAPER) <= set(REGISTRY)
    assert {n for n in PAPER if not REGISTRY[n].draws_noise} == {"none", "deterministic_meta_dropout", "fgsm"}


def test_unknown_name_lists_the_registry():
    with pytest.raises(UserError) as err:
        build_regularizer("dropconnect")
    assert "mixup" in str(err.value) and "fgsm" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name,hyper,says", [
    ("mixup", {"gamma": 0}, "gamma"), ("mixup", {"gamma": -1.0}, "gamma"), ("mixup", {"gamma": "1"}, "gamma"),
    ("vib", {"beta": -1e-5}, "beta"), ("vib", {"beta": True}, "beta"), ("vib", {"gamma": 1.0}, "beta"),
    ("information_dropout", {"beta": -1}, "beta"), ("information_dropout", {"alpha_max": 1.0}, "alpha_max"),
    ("fgsm", {"epsilon": -0.1}, "epsilon"), ("fgsm", {"eps": 0.1}, "epsilon"),
    ("meta_dropout_additive", {"scale": 0.0}, "scale"), ("meta_dropout_additive", {"logit_noise": 1}, "logit_noise"),
    ("weight_gaussian", {"sigma_init": 0}, "sigma_init"), ("fixed_gaussian", {"scale": 1}, "none"),
    ("weight_gaussian", {"sigma_relative": "yes"}, "sigma_relative"),
    ("independent_gaussian", {"noise_shape": "pixel"}, "noise_shape"),
    ("meta_dropout_additive", {"softplus": 0}, "softplus"),
    ("fgsm", {"norm": "l3"}, "norm"), ("fgsm", {"clamp": None}, "clamp"),
])
def test_bad_hyper_parameters_raise_one_clear_line(name, hyper, says):
    with pytest.raises(UserError) as err:
        build_regularizer(name, hyper)
    message = str(err.value)
    assert name in message and says in message and "\n" not in message


# --- parameters and randomness ---------------------------------------------------------------------------

def test_parameter_kinds():
    """Table 3's parameters are meta-only (like phi); Table 2's are adapted too; fixed_gaussian has none."""
    base = set(tiny_learner("none").named_parameters())
    def own(name): return set(tiny_learner(name).named_parameters()) - base
    assert own("fixed_gaussian") == own("mixup") == own("fgsm") == set()
    for name in ("independent_gaussian", "weight_gaussian", "deterministic_meta_dropout",
                 "meta_dropout_learned_variance", "meta_dropout_additive"):
        assert own(name) and all(n.startswith("meta/phi.") for n in own(name)), name
    for name in ("vib", "information_dropout"):
        assert own(name) and all(n.startswith("theta/") for n in own(name)), name


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_randomness_comes_only_from_the_noise_generator(name):
    """Deterministic modes draw nothing; stochastic ones draw from the learner's generator, never the global RNG."""
    learner = tiny_learner(name)
    ep = tiny_episodes()
    global_state, noise_state = torch.get_rng_state(), learner.noise_generator.get_state()
    learner.meta_loss(ep.x_support, ep.y_support, ep.x_query, ep.y_query)
    assert torch.equal(torch.get_rng_state(), global_state)
    drew = not torch.equal(learner.noise_generator.get_state(), noise_state)
    assert drew == learner.reg.draws_noise


@pytest.mark.parametrize("name", sorted(n for n, cls in REGISTRY.items() if cls.draws_noise))
def test_support_loss_depends_on_the_noise(name):
    learner = tiny_learner(name)
    x, targets, _, _ = episode()
    first, _ = support_forward(learner, x, targets, one_sample_noise(learner, len(x), seed=0))
    second, _ = support_forward(learner, x, targets, one_sample_noise(learner, len(x), seed=1))
    assert (first - second).abs().max() > 1e-6


# --- the query path ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", GAUSSIAN_NOISE)
def test_query_path_is_the_support_path_at_zero_noise(name):
    """Eq. 4: the query uses a = mean, i.e. the support forward with eps = 0 (weights at their mean for
    weight_gaussian, unit multiplier for information dropout)."""
    learner = tiny_learner(name)
    x, targets, _, _ = episode()
    zeros = {k: torch.zeros_like(v) for k, v in one_sample_noise(learner, len(x)).items()}
    support, _ = support_forward(learner, x, targets, zeros)
    query = query_logits(TINY, learner.reg, learner.ops, learner.adapted, learner.meta_only, x)
    torch.testing.assert_close(support, query, rtol=0, atol=1e-13)


def query_of(learner, reg_name: str, adapted: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Query logits of the learner's parameters through another regularizer's query path."""
    _, _, xq, _ = episode()
    adapted = learner.adapted if adapted is None else adapted
    return query_logits(TINY, build_regularizer(reg_name), learner.ops, adapted, learner.meta_only, xq)


@pytest.mark.parametrize("name,same_as", [
    ("weight_gaussian", "none"), ("mixup", "none"), ("vib", "none"), ("information_dropout", "none"),
    ("fgsm", "none"), ("deterministic_meta_dropout", "meta_dropout"), ("meta_dropout_learned_variance", "meta_dropout"),
])
def test_query_path_is_exactly_the_reference_one(name, same_as):
    """Purely stochastic ones query plain conv4 (mean weights); meta-dropout variants query f * softplus(mu)."""
    learner = tiny_learner(name)
    assert torch.equal(query_of(learner, name), query_of(learner, same_as))


def test_fixed_gaussian_query_path_scales_the_conv_by_log2():
    """softplus(0) = log 2 on every pre-activation, i.e. conv4 with conv weights and biases times log 2."""
    learner = tiny_learner("fixed_gaussian")
    scaled = {n: v * math.log(2) if n.startswith("conv") else v for n, v in learner.adapted.items()}
    torch.testing.assert_close(query_of(learner, "fixed_gaussian"), query_of(learner, "none", scaled),
                               rtol=1e-12, atol=1e-13)


def test_deterministic_meta_dropout_support_equals_query():
    learner = tiny_learner("deterministic_meta_dropout")
    x, targets, _, _ = episode()
    support, _ = support_forward(learner, x, targets, {})
    assert torch.equal(support, query_logits(TINY, learner.reg, learner.ops, learner.adapted, learner.meta_only, x))


# --- KL terms ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vib", "information_dropout"])
def test_kl_is_nonnegative_and_proportional_to_beta(name):
    x, targets, _, _ = episode()
    extra = {}
    for beta in (0.0, 1e-4, 1e-3):
        learner = tiny_learner(name, {"beta": beta})
        logits, ctx = support_forward(learner, x, targets, one_sample_noise(learner, len(x)))
        extra[beta] = torch.as_tensor(ctx.extra_loss).item()
        assert soft_cross_entropy(logits, targets) > 0
    assert extra[0.0] == 0.0
    assert extra[1e-4] > 0
    assert extra[1e-3] == pytest.approx(10 * extra[1e-4], rel=1e-12)


# --- mixup -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [0.2, 1.0, 2.0])
def test_mixup_lambda_follows_beta(gamma):
    reg = build_regularizer("mixup", {"gamma": gamma})
    gen = torch.Generator().manual_seed(7)
    noise = reg.sample_noise(TINY, 6, (500, 8), gen, torch.device("cpu"), torch.float64)
    lam = noise["lam"].flatten().numpy()
    assert stats.kstest(lam, "beta", args=(gamma, gamma)).pvalue > 1e-3
    layers = noise["layer"].flatten(0, 1)
    assert torch.equal(layers.sum(-1), torch.ones(4000, dtype=torch.float64))
    counts = layers.sum(0)
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3 and len(counts) == MIX_LAYERS
    assert torch.equal(noise["perm"].sort(-1).values, torch.arange(6).expand(500, 8, 6))


def test_mixup_noise_is_fixed_by_the_generator_state():
    reg = build_regularizer("mixup", {"gamma": 0.2})
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    first = reg.sample_noise(TINY, 6, (2, 1), gen, torch.device("cpu"), torch.float64)
    gen.set_state(state)
    second = reg.sample_noise(TINY, 6, (2, 1), gen, torch.device("cpu"), torch.float64)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_mixup_mixes_inputs_and_labels_at_the_chosen_layer():
    learner = tiny_learner("mixup")
    x, targets, _, _ = episode()
    perm, lam = torch.roll(torch.arange(len(x)), 1), torch.tensor(0.3, dtype=torch.float64)
    noise = {"layer": F.one_hot(torch.tensor(0), MIX_LAYERS).double(), "perm": perm, "lam": lam}
    logits, ctx = support_forward(learner, x, targets, noise)
    plain = query_logits(TINY, build_regularizer("none"), learner.ops, learner.adapted, learner.meta_only,
                         lam * x + (1 - lam) * x[perm])
    torch.testing.assert_close(logits, plain, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(ctx.targets, lam * targets + (1 - lam) * targets[perm])
    noise["layer"] = F.one_hot(torch.tensor(MIX_LAYERS - 1), MIX_LAYERS).double()
    deep, _ = support_forward(learner, x, targets, noise)
    assert (deep - logits).abs().max() > 1e-8                 # another layer mixes differently


# --- FGSM --------------------------------------------------------------------------------------------------

def test_fgsm_raises_the_loss_it_attacks_and_respects_the_range():
    learner = tiny_learner("none")
    ep = tiny_episodes()
    one = torch.ones((), dtype=torch.float64)

    def attacked(x, y, epsilon, space):
        loss_at = lambda inputs: F.cross_entropy(  # noqa: E731
            query_logits(TINY, learner.reg, learner.ops, learner.adapted, learner.meta_only, inputs), y)
        x_adv = fast_gradient(loss_at, x, epsilon, "linf", space)
        return loss_at(x), loss_at(x_adv), x_adv

    clean, adv, x_adv = vmap(attacked, in_dims=(0, 0, None, None))(ep.x_query, ep.y_query, 0.05,
                                                                   PixelSpace(one, -one, one))
    assert (adv > clean).all()
    assert x_adv.min() >= -1 and x_adv.max() <= 1
    _, _, unclamped = vmap(attacked, in_dims=(0, 0, None, None))(ep.x_query, ep.y_query, 0.05, None)
    torch.testing.assert_close((unclamped - ep.x_query).abs(), torch.full_like(unclamped, 0.05))


def test_fgsm_regularizer_perturbs_the_support_by_epsilon():
    learner = tiny_learner("fgsm", {"epsilon": 0.3})
    x, targets, _, _ = episode()
    ctx = ForwardContext(params_of(learner), {}, targets, learner.ops)
    loss_at = lambda inputs: soft_cross_entropy(  # noqa: E731
        forward(TINY, ctx.params, inputs, learner.reg, ForwardContext(ctx.params, {}, targets, learner.ops)), targets)
    x_adv = learner.reg.perturb_support(x, loss_at, ctx)
    torch.testing.assert_close((x_adv - x).abs(), torch.full_like(x, 0.3))
    assert loss_at(x_adv) > loss_at(x)


def test_fgsm_at_zero_epsilon_is_plain_maml():
    ep = tiny_episodes()
    losses = [tiny_learner(name, hyper).meta_loss(ep.x_support, ep.y_support, ep.x_query, ep.y_query)[0]
              for name, hyper in (("fgsm", {"epsilon": 0.0}), ("none", {}))]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-12, atol=0)
