"""The reproduction's open choices as switches: Meta-SGD's initial alphas, Independent Gaussian's noise shape,
Weight Gaussian's initial sigma, additive meta-dropout's formula, attacks in pixel units with clamping, the
release preset per row, cross-split duplicates (on the real data), and the `choices` table."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.api import build_experiment
from bench.core.attacks import fast_gradient
from bench.data.pixels import PIXEL_UNITS
from bench.core.backbone import BackboneSpec, forward
from bench.runner.cells import expand
from bench.data import duplicates
from bench.data.bank import ImageBank
from bench.data.mini_imagenet import NORMALIZATIONS, mini_imagenet_duplicates
from bench.data.omniglot import load_omniglot
from bench.data.episodes import EpisodeSampler
from bench.util.errors import UserError
from bench.core.regularizer import ForwardContext
from bench.core.inner_loop import query_logits, soft_cross_entropy, support_loss
from bench.core.learner import EXECUTIONS, LearnerConfig, MetaLearner
from bench.util.paths import CACHE_DIR_ENV
from bench.store import protocol
from bench.store.protocol import load_protocol
from bench.store.results import ResultStore, has_attacks
from bench.runner.run_cell import RunOptions, run_cell
from regularizers import build_regularizer
from run_all import main
from tests.meta_gradcheck import TINY, meta_gradients, tiny_episodes, tiny_learner

REPO = Path(__file__).resolve().parents[2]
RGB = BackboneSpec(in_channels=3, image_size=16, channels=4, ways=3)


@pytest.fixture(autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A session cache for decoded arrays and duplicate reports, never the user's."""
    path = tmp_path_factory.getbasetemp() / "data-cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(path))
    return path


# --- Meta-SGD's initial learning rates ---------------------------------------------------------------------

def test_metasgd_alphas_start_constant_or_uniform():
    constant = tiny_learner("none", algorithm="metasgd")
    assert all(torch.equal(a, torch.full_like(a, 0.1)) for a in constant.inner_lrs.values())
    config = LearnerConfig(algorithm="metasgd", inner_lr=0.1, inner_steps=2, alpha_init="uniform")
    uniform = MetaLearner(TINY, build_regularizer("none"), config, seed=3, dtype=torch.float64)
    alphas = torch.cat([a.detach().flatten() for a in uniform.inner_lrs.values()])
    assert alphas.min() >= 0.005 and alphas.max() <= 0.1 and alphas.std() > 0.02
    assert all(torch.equal(constant.adapted[n], uniform.adapted[n]) for n in constant.adapted)   # theta unchanged
    again = MetaLearner(TINY, build_regularizer("none"), config, seed=3, dtype=torch.float64)
    assert all(torch.equal(uniform.inner_lrs[n], again.inner_lrs[n]) for n in uniform.inner_lrs)
    with pytest.raises(UserError, match="alpha_init"):
        LearnerConfig(algorithm="metasgd", alpha_init="normal")
    with pytest.raises(UserError, match="alpha_range"):
        LearnerConfig(algorithm="metasgd", alpha_range=(0.1, 0.01))


def test_alpha_init_is_a_protocol_setting():
    protocol = load_protocol("omniglot_20w1s", "smoke", {"metasgd_alpha_init": "uniform",
                                                         "metasgd_alpha_range": [0.02, 0.03]})
    learner = build_experiment(protocol, learner="metasgd").learner
    alphas = torch.cat([a.detach().flatten() for a in learner.inner_lrs.values()])
    assert alphas.min() >= 0.02 and alphas.max() <= 0.03


# --- Independent Gaussian's noise shape ----------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["element", "channel"])
def test_independent_gaussian_noise_shape(shape):
    learner = tiny_learner("independent_gaussian", {"noise_shape": shape})
    gen = torch.Generator().manual_seed(0)
    noise = learner.reg.sample_noise(TINY, 5, (2, 3), gen, torch.device("cpu"), torch.float64)
    expected = (2, 3, 5, 4, 1, 1) if shape == "channel" else (2, 3, 5, *TINY.preactivation_shape(1))
    assert tuple(noise["eps1"].shape) == expected
    ctx = ForwardContext({**learner.adapted, **learner.meta_only}, {k: v[0, 0] for k, v in noise.items()},
                         torch.empty(0), learner.ops)
    f = torch.ones(5, *TINY.preactivation_shape(1), dtype=torch.float64)
    z = learner.reg.on_preactivation(1, torch.zeros(5, *TINY.block_input_shape(1), dtype=torch.float64), f, ctx)
    spread_over_space = (z - z[:, :, :1, :1]).abs().max()
    assert (spread_over_space == 0) == (shape == "channel")
    assert z[:, :, 0, 0].std() > 0.1                    # differs between examples and channels


# --- Weight Gaussian's initial sigma -------------------------------------------------------------------------

@pytest.mark.parametrize("hyper,sigma", [({}, 0.02), ({"sigma_init": 0.5}, 0.01),
                                         ({"sigma_init": 1e-3, "sigma_relative": False}, 1e-3)])
def test_weight_gaussian_initial_sigma(hyper, sigma):
    learner = tiny_learner("weight_gaussian", hyper)
    rhos = {n: v for n, v in learner.meta_only.items() if n.startswith("phi.rho.")}
    assert len(rhos) == 6
    for name, rho in rhos.items():
        torch.testing.assert_close(F.softplus(rho), torch.full_like(rho, sigma), rtol=1e-12, atol=0, msg=name)


# --- additive meta-dropout's formula -------------------------------------------------------------------------

@pytest.mark.parametrize("softplus", [True, False])
def test_additive_meta_dropout_formula(softplus):
    learner = tiny_learner("meta_dropout_additive", {"softplus": softplus, "scale": 0.3})
    params = {**learner.adapted, **learner.meta_only}
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(4, *TINY.block_input_shape(2), generator=gen, dtype=torch.float64)
    f = torch.randn(4, *TINY.preactivation_shape(2), generator=gen, dtype=torch.float64)
    eps = torch.randn_like(f)
    mu = learner.reg.mu(2, h, ForwardContext(params, None, torch.empty(0), learner.ops))
    transform = F.softplus if softplus else (lambda a: a)
    noisy = learner.reg.on_preactivation(2, h, f, ForwardContext(params, {"eps2": eps}, torch.empty(0), learner.ops))
    query = learner.reg.on_preactivation(2, h, f, ForwardContext(params, None, torch.empty(0), learner.ops))
    torch.testing.assert_close(noisy, f + 0.3 * transform(mu + eps), rtol=1e-14, atol=0)
    torch.testing.assert_close(query, f + 0.3 * transform(mu), rtol=1e-14, atol=0)


# --- attacks in pixel units ----------------------------------------------------------------------------------

def _mini_like_batch(seed: int = 0) -> tuple[ImageBank, torch.Tensor]:
    """miniImageNet's normalisation on random pixels, some at 0 and 255 (where clamping matters)."""
    mean, std = NORMALIZATIONS["train"]
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (3, 4, 3, 16, 16), dtype=np.uint8)
    images[:, :, :, :3] = 0
    images[:, :, :, -3:] = 255
    bank = ImageBank.from_numpy(images, ["a", "b", "c"], tuple(m / 255 for m in mean), tuple(s / 255 for s in std))
    return bank, bank.to_float(bank.images.flatten(0, 1), torch.float64)


def _to_pixels(bank: ImageBank, x: torch.Tensor) -> torch.Tensor:
    mean, std = (torch.tensor(v, dtype=x.dtype).view(-1, 1, 1) for v in (bank.mean, bank.std))
    return x * std + mean


@pytest.mark.parametrize("norm,epsilon", [("linf", 0.1), ("l2", 2.0), ("l1", 40.0)])
def test_attack_on_mini_normalisation_moves_pixels_by_at_most_epsilon(norm, epsilon):
    """The attack's size is in [0, 1] pixel units whatever the normalisation, and every pixel stays valid."""
    bank, x = _mini_like_batch()
    learner = MetaLearner(RGB, build_regularizer("none"), LearnerConfig(), seed=0, dtype=torch.float64)
    y = torch.arange(len(x)) % RGB.ways
    loss = lambda inputs: F.cross_entropy(  # noqa: E731
        query_logits(RGB, learner.reg, learner.ops, learner.adapted, learner.meta_only, inputs), y)
    space = bank.pixel_space(torch.float64)
    pixels, moved = _to_pixels(bank, x), _to_pixels(bank, fast_gradient(loss, x, epsilon, norm, space))
    delta = (moved - pixels).flatten(1)
    assert moved.min() >= -1e-12 and moved.max() <= 1 + 1e-12
    size = {"linf": delta.abs().max(1).values, "l2": delta.norm(dim=1), "l1": delta.abs().sum(1)}[norm]
    assert (size <= epsilon * (1 + 1e-9)).all() and (size > 0.3 * epsilon).all()
    free = fast_gradient(loss, x, epsilon, norm, space, clamp=False)
    free_delta = (_to_pixels(bank, free) - pixels).flatten(1)
    free_size = {"linf": free_delta.abs().max(1).values, "l2": free_delta.norm(dim=1),
                 "l1": free_delta.abs().sum(1)}[norm]
    torch.testing.assert_close(free_size, torch.full_like(free_size, epsilon), rtol=1e-9, atol=0)
    if norm == "linf":
        assert _to_pixels(bank, free).max() > 1 and _to_pixels(bank, free).min() < 0     # clamping mattered


@pytest.mark.parametrize("clamp", [True, False])
def test_fgsm_training_is_in_pixel_units_and_clamps_like_the_test_attack(clamp):
    bank, x = _mini_like_batch(1)
    reg = build_regularizer("fgsm", {"epsilon": 0.05, "clamp": clamp})
    reg.bind_pixels(bank.pixel_space(torch.float64))
    learner = MetaLearner(RGB, reg, LearnerConfig(), seed=0, dtype=torch.float64)
    targets = F.one_hot(torch.arange(len(x)) % RGB.ways, RGB.ways).double()
    params = {**learner.adapted, **learner.meta_only}
    loss_at = lambda inputs: soft_cross_entropy(  # noqa: E731
        forward(RGB, params, inputs, reg, ForwardContext(params, {}, targets, learner.ops)), targets)
    x_adv = reg.perturb_support(x, loss_at, ForwardContext(params, {}, targets, learner.ops))
    moved, pixels = _to_pixels(bank, x_adv), _to_pixels(bank, x)
    assert (moved - pixels).abs().max() <= 0.05 + 1e-12
    inside = (moved.min() >= -1e-12) and (moved.max() <= 1 + 1e-12)
    assert inside == clamp
    assert loss_at(x_adv) > loss_at(x)


def test_experiment_binds_the_pixel_space_of_its_data():
    experiment = build_experiment(load_protocol("mini_5w1s", "smoke"), regularizer="fgsm")
    torch.testing.assert_close(experiment.learner.reg.pixels.std.flatten(),
                               torch.tensor(experiment.train_bank.std))


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_fast_gradient_training_treats_the_attack_as_data(norm):
    """With one inner step, adversarial MAML's meta-gradients equal plain MAML's on the attacked support set:
    the attack is a constant of the parameters (as in adversarial training), on every execution path."""
    config = LearnerConfig(inner_lr=0.1, inner_steps=1)
    adversarial = MetaLearner(TINY, build_regularizer("fgsm", {"epsilon": 0.3, "norm": norm}), config, seed=3,
                              dtype=torch.float64)
    plain = MetaLearner(TINY, build_regularizer("none"), config, seed=3, dtype=torch.float64)
    ep = tiny_episodes()
    targets = F.one_hot(ep.y_support, TINY.ways).double()
    attacked = torch.stack([
        adversarial.reg.perturb_support(ep.x_support[b], lambda inputs, b=b: support_loss(
            TINY, plain.reg, plain.ops, plain.adapted, plain.meta_only, inputs, targets[b], {}), None)
        for b in range(len(ep.x_support))])
    shifted = ep.__class__(attacked, ep.y_support, ep.x_query, ep.y_query)
    for execution in EXECUTIONS:
        _, g_adv = meta_gradients(adversarial, ep, execution)
        _, g_plain = meta_gradients(plain, shifted, execution)
        for name in g_plain:
            torch.testing.assert_close(g_adv[name], g_plain[name], rtol=1e-10, atol=1e-13, msg=name)


def test_results_attacked_in_other_units_are_not_done():
    """A result from before attacks were in pixel units (or per norm) is run again: its test only, as the cell's
    final checkpoint is kept."""
    attacks = {"linf": [0.0, 0.1]}
    curve = {"epsilons": [0.0, 0.1], "mean": [50.0, 40.0], "ci95": [1.0, 1.0]}
    assert not has_attacks({"robustness": curve}, attacks)
    record = {"robustness": {"units": PIXEL_UNITS, "norms": {"linf": curve}}}
    assert has_attacks(record, attacks) and not has_attacks(record, {"linf": [0.2]})
    assert not has_attacks(record, {"l2": [0.0]}) and has_attacks({}, {})


# --- the release preset, per row ---------------------------------------------------------------------------

def test_release_preset_meta_lr_per_row_of_every_table():
    """The release ran MAML and MAML + meta-dropout only; its 3e-4 applies to that one row family on Omniglot
    20-way 1-shot. Meta-SGD rows and the meta-dropout variants keep the paper's meta-lr."""
    cells = expand(["table1", "table2", "table3", "fig5", "choices"], "release", 1, {})
    paper = {"omniglot_20w1s": 1e-3, "omniglot_20w5s": 1e-3, "mini_5w1s": 1e-4, "mini_5w5s": 1e-4}
    seen = set()
    for cell in cells:
        column, learner, reg = cell["protocol"]["name"], cell["learner"], cell["regularizer"]
        release_row = (column, learner, reg) == ("omniglot_20w1s", "maml", "meta_dropout")
        assert cell["protocol"]["meta_lr"] == (3e-4 if release_row else paper[column]), cell["name"]
        if cell["protocol"]["dataset"] == "omniglot":
            assert (cell["protocol"]["meta_batch"], cell["protocol"]["iterations"]) == (4, 60000)
        seen.add((learner, reg))
    assert {("metasgd", "meta_dropout"), ("maml", "deterministic_meta_dropout"), ("maml", "meta_dropout")} <= seen


def test_preset_rule_with_an_unknown_key_is_a_user_error(tmp_path, monkeypatch):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "odd.yaml").write_text("per_cell:\n  - when: {dataset: omniglot}\n    set: {meta_lr: 1.0}\n")
    (tmp_path / "protocols").symlink_to(protocol.CONFIGS / "protocols")
    monkeypatch.setattr(protocol, "CONFIGS", tmp_path)
    with pytest.raises(UserError, match="unknown key"):
        protocol.load_protocol("omniglot_20w1s", "odd")


# --- cross-split duplicates --------------------------------------------------------------------------------

def test_mini_imagenet_has_seven_cross_split_duplicate_pairs(mini_imagenet_root):
    report = mini_imagenet_duplicates(mini_imagenet_root)
    pairs = [g["splits"] for g in report["cross_split"]]
    assert len(pairs) == 7 and pairs.count("train-val") == 6 and pairs.count("train-test") == 1
    assert all(len(g["places"]) == 2 for g in report["cross_split"])
    assert report["cross_class"] == [] and report["within_class"] == 0
    crossing = {(g["places"][0]["class"], g["places"][1]["class"]) for g in report["cross_split"]}
    assert crossing == {("n03888605", "n03535780"), ("n02795169", "n03127925")}
    mask = duplicates.excluded_mask(report, "test", ["n03127925"], 600)
    assert mask.sum() == 1 and mask[0, report["cross_split"][0]["places"][1]["index"]]
    assert mini_imagenet_duplicates(mini_imagenet_root) == report          # cached, same answer


def test_pickle_duplicates_are_found_by_pixels(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (4, 84, 84, 3), dtype=np.uint8)
    test = np.concatenate([rng.integers(0, 256, (1, 84, 84, 3), dtype=np.uint8), train[2:3]])
    folder = tmp_path / "mini_imagenet"
    folder.mkdir()
    for split, images, classes in (("train", train, {"n02": [0, 2], "n01": [1, 3]}), ("test", test, {"n09": [0, 1]})):
        with open(folder / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump({"image_data": images, "class_dict": classes}, f)
    report = mini_imagenet_duplicates(tmp_path)
    assert report["check"] == "identical pixels (pickle)" and len(report["cross_split"]) == 1
    assert report["cross_split"][0]["places"] == [{"split": "train", "class": "n02", "index": 1},
                                                  {"split": "test", "class": "n09", "index": 1}]


def test_omniglot_has_three_cross_alphabet_collisions_across_the_split(omniglot_root):
    kept = load_omniglot(omniglot_root, "test", download_missing=False)
    report = kept.hygiene
    assert kept.excluded is None and report["drop_cross_split_duplicates"] is False
    collisions = {tuple(g["sources"]) for g in report["cross_split"]}
    assert len(collisions) == 3 and len(report["cross_split"]) == 12          # 4 rotations each
    assert all(g["splits"] == "train-test" for g in report["cross_split"])
    assert all(len({s.split("/")[1] for s in sources}) == 2 for sources in collisions)   # two alphabets
    dropped = load_omniglot(omniglot_root, "test", drop_cross_split_duplicates=True, download_missing=False)
    assert int(dropped.excluded.sum()) == 12 and dropped.hygiene["dropped"] == 12
    train = load_omniglot(omniglot_root, "train", drop_cross_split_duplicates=True, download_missing=False)
    assert train.excluded is None and train.hygiene["dropped"] == 0           # the train copy is kept
    row = {name: i for i, name in enumerate(dropped.class_names)}
    for group in report["cross_split"]:
        test_place = group["places"][1]
        assert dropped.excluded[row[test_place["class"]], test_place["index"]]


def test_the_sampler_never_draws_excluded_images():
    codes = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8, 1, 1, 1)          # pixel value = class * 8 + index
    bank = ImageBank.from_numpy(np.broadcast_to(codes, (6, 8, 1, 2, 2)).copy(), list("abcdef"), (0.0,), (1.0,))
    excluded = np.zeros((6, 8), dtype=bool)
    excluded[:, 0] = excluded[2, 5] = True
    bank.excluded = torch.from_numpy(excluded)
    sampler = EpisodeSampler(bank, ways=3, shots=2, queries=4, seed=0)
    seen = set()
    for _ in range(200):
        ep = sampler.sample(2)
        seen |= set((torch.cat([ep.x_support, ep.x_query], 1)[..., 0, 0, 0] * 255).round().long().flatten().tolist())
    assert seen == set(np.flatnonzero(~excluded).tolist())
    with pytest.raises(UserError, match="has 6"):
        EpisodeSampler(bank, ways=3, shots=2, queries=5, seed=0)


def test_duplicates_are_reported_once_and_recorded_in_the_cell_json(omniglot_root, tmp_path, monkeypatch):
    monkeypatch.setattr(duplicates, "_reported", set())
    with pytest.warns(duplicates.DataHygieneWarning, match="3 distinct source collisions"):
        load_omniglot(omniglot_root, "train", download_missing=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", duplicates.DataHygieneWarning)
        load_omniglot(omniglot_root, "test", download_missing=False)         # once per dataset
    protocol = load_protocol("omniglot_20w1s", "paper", {
        "ways": 5, "queries": 1, "channels": 4, "inner_steps": 1, "meta_batch": 1, "iterations": 1, "mc_test": 1,
        "test_episodes": 2, "test_batch": 2, "checkpoint_every": 1, "drop_cross_split_duplicates": True})
    cell = {"name": "omniglot-duplicates", "protocol": protocol.to_dict(), "learner": "maml", "regularizer": "none",
            "hyper": {}, "seed": 0, "preset": "paper", "overrides": {}, "attacks": {}, "places": []}
    status = run_cell(cell, RunOptions(str(tmp_path), str(omniglot_root)))
    assert status["status"] == "ran", status
    record = json.loads(ResultStore(tmp_path).result_path("omniglot-duplicates").read_text())["data"]["duplicates"]
    assert record["dropped"] == {"train": 0, "test": 12} and len(record["cross_split"]) == 12
    assert record["drop_cross_split_duplicates"] is True


def test_duplicates_are_one_notice_line_on_stderr(omniglot_root):
    load = ("from bench.data.registry import load_bank\n"
            "for split in ('train', 'test', 'train'):\n"
            f"    load_bank('omniglot', split, {str(omniglot_root)!r}, download_missing=False)\n")
    run = subprocess.run([sys.executable, "-c", load], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("notice: omniglot: 12 groups of identical images"), run.stderr
    assert "registry.py" not in run.stderr and "DataHygieneWarning" not in run.stderr


# --- the choices table ---------------------------------------------------------------------------------------

def test_choices_table_puts_each_alternative_beside_its_default():
    cells = {(p["row"], c["protocol"]["name"]): c for c in expand(["choices", "table1", "table3"], "smoke", 1, {})
             for p in c["places"] if p["table"] == "choices"}
    uniform = cells[("metasgd_alpha_uniform", "mini_5w1s")]
    assert uniform["protocol"]["metasgd_alpha_init"] == "uniform" and uniform["learner"] == "metasgd"
    assert cells[("metasgd", "mini_5w1s")]["protocol"]["metasgd_alpha_init"] == "constant"
    assert {p["table"] for p in cells[("metasgd", "mini_5w1s")]["places"]} == {"choices", "table1"}   # shared
    assert cells[("independent_gaussian_channel", "omniglot_20w1s")]["hyper"] == {"noise_shape": "channel"}
    assert cells[("maml_drop_duplicates", "omniglot_20w5s")]["protocol"]["drop_cross_split_duplicates"] is True
    assert ("fgsm_omniglot_0.1_unclamped", "mini_5w1s") not in cells
    for row, hyper in [("weight_gaussian_absolute_1e-3", {"sigma_init": 1e-3, "sigma_relative": False}),
                       ("meta_dropout_additive_linear", {"scale": 0.1, "softplus": False})]:
        reg = build_regularizer(cells[(row, "mini_5w5s")]["regularizer"], cells[(row, "mini_5w5s")]["hyper"])
        assert {k: reg.hyper[k] for k in hyper} == hyper


def test_choices_rows_run(tmp_path):
    """Meta-SGD's default and alternative rows on one column: two cells, both in the rendered table."""
    argv = ["--table", "choices", "--preset", "smoke", "--only", "mini_5w1s__metasgd__none__*", "--results",
            str(tmp_path), "--device", "cpu"]
    assert main(argv) == 0
    results = ResultStore(tmp_path).all_results().values()
    assert sorted(r["config"]["protocol"]["metasgd_alpha_init"] for r in results) == ["constant", "uniform"]
    md = (tmp_path / "tables" / "choices.md").read_text()
    line = next(line for line in md.splitlines() if "U[0.005, 0.1]" in line)
    assert "–†" in line and line.count("%") + line.count("±") >= 1        # run in one column, missing elsewhere
