"""Figures 4, 6 and 7 from trained cells: Fig. 4's geometry against the adapted model's own logits, the decoder's
error falling with training, labelled axes and legends (matplotlib objects), the kept checkpoints they load, and
the attack in pixel units on real miniImageNet images."""
from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.core import checkpoint
from bench.core.attacks import fast_gradient
from bench.core.backbone import BackboneSpec
from bench.runner.cells import expand
from bench.data.bank import ImageBank
from bench.data.decode import rgb84
from bench.data.mini_imagenet import NORMALIZATIONS, ZIP_NAME
from bench.data.synthetic import synthetic_bank
from bench.data.episodes import EpisodeSampler
from bench.core.inner_loop import query_logits
from bench.core.learner import LearnerConfig, MetaLearner
from bench.store.results import ResultStore
from bench.runner.sweep import placed_results
from tables.figures.trained import restricted
from regularizers import build_regularizer
from run_all import main
from tables import load_table_def
from tables.figures import fig4_boundary, fig6_decoder, fig7_features
from tables.figures.fig4_boundary import KINDS, boundary_panel
from tables.figures.fig6_decoder import train_decoder
from tables.figures.context import FigureContext

SPEC = BackboneSpec(in_channels=1, image_size=16, channels=4, ways=5)
FIGURES = {"fig4": fig4_boundary, "fig6": fig6_decoder, "fig7": fig7_features}
SHORT = {"iterations": 2, "test_episodes": 4}          # the smoke preset, shorter still: the cells only feed figures


def _learner(regularizer: str, ways: int = 5) -> MetaLearner:
    config = LearnerConfig(inner_lr=0.1, inner_steps=2, mc_test=3)
    spec = BackboneSpec(SPEC.in_channels, SPEC.image_size, SPEC.channels, ways)
    return MetaLearner(spec, build_regularizer(regularizer), config, seed=1, dtype=torch.float64)


def _bank() -> ImageBank:
    return synthetic_bank(8, 10, (1, 16, 16), seed=3)


# --- Figure 4's geometry -------------------------------------------------------------------------------------

@pytest.mark.parametrize("regularizer,ways,classes", [("meta_dropout", 2, (0, 1)), ("meta_dropout", 5, (3, 1)),
                                                     ("none", 5, (0, 4))])
def test_fig4_points_fall_on_the_side_the_adapted_head_classifies_them(regularizer, ways, classes):
    """For every drawn point (support, perturbed support, query), x > boundary exactly when the adapted model's
    own forward scores c1 above c2; with a 2-way head that is the model's prediction."""
    learner = restricted(_learner(regularizer), ways)
    episode = EpisodeSampler(_bank(), ways, 2, 4, seed=0, dtype=torch.float64).sample(1)
    c1, c2 = classes
    panel = boundary_panel(learner, episode, samples=4, seed=0, c1=c1, c2=c2)
    right = panel.x > panel.boundary
    assert ((panel.logit_gap > 0) == right).all()
    kinds = np.bincount(panel.kind, minlength=3)
    perturbed = 4 * 2 * 2 if regularizer == "meta_dropout" else 0               # samples x shots x 2 classes
    assert kinds.tolist() == [4, perturbed, 8]
    assert np.isfinite(panel.y).all() and panel.y.std() > 0
    if ways == 2:                                                              # the model's own prediction
        with torch.no_grad():
            adapted = learner.adapt(episode.x_support, episode.y_support, 3, first_order=True)
            logits = query_logits(learner.spec, learner.reg, learner.ops, {n: v[0] for n, v in adapted.items()},
                                  learner.meta_only, episode.x_query[0])
        query = panel.kind == KINDS.index("query")
        assert ((logits.argmax(-1) == 0).numpy() == right[query]).all()


def test_fig4_is_reproducible_and_restricting_keeps_the_first_classes():
    learner = _learner("meta_dropout")
    two = restricted(learner, 2)
    torch.testing.assert_close(two.adapted["head.weight"], learner.adapted["head.weight"][:2])
    assert torch.equal(two.adapted["conv1.weight"], learner.adapted["conv1.weight"])
    episode = EpisodeSampler(_bank(), 2, 2, 4, seed=0, dtype=torch.float64).sample(1)
    first = boundary_panel(restricted(_learner("meta_dropout"), 2), episode, samples=3, seed=5)
    again = boundary_panel(restricted(_learner("meta_dropout"), 2), episode, samples=3, seed=5)
    for key, value in first.to_arrays().items():
        np.testing.assert_array_equal(value, again.to_arrays()[key], err_msg=key)


# --- Figure 6's decoder --------------------------------------------------------------------------------------

def test_fig6_decoder_error_decreases_with_training():
    learner = _learner("meta_dropout")
    bank = _bank()
    held = (bank.to_float(bank.images[:, 0], torch.float64), bank.images[:, 0].float() / 255)
    decoder, history = train_decoder(learner, bank, held, steps=60, batch=16, lr=3e-3, seed=0, pool=40,
                                     evaluate_every=20)
    errors = [error for _, error in history]
    assert [step for step, _ in history] == [0, 20, 40, 60]
    assert errors[-1] < 0.7 * errors[0]
    assert decoder(torch.zeros(1, 4, 2, 2)).shape == (1, 1, 16, 16)


# --- the figures from trained cells --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def figure_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """run_all.py for Figs. 4, 6 and 7 on a short smoke preset: trains their 3 cells (Table 1 rows), draws."""
    results = tmp_path_factory.mktemp("figures")
    settings = [arg for key, value in SHORT.items() for arg in ("--set", f"{key}={value}")]
    assert main(["--table", "fig4,fig6,fig7", "--preset", "smoke", "--results", str(results), "--device", "cpu",
                 *settings]) == 0
    return results


def test_figures_are_written_as_png_and_pdf_and_their_cells_keep_final_checkpoints(figure_run: Path):
    for name in FIGURES:
        for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
            path = figure_run / "tables" / f"{name}.{ext}"
            assert path.read_bytes().startswith(magic) and path.stat().st_size > 5000, path
    store = ResultStore(figure_run)
    results = store.all_results()
    assert len(results) == 3
    for name, result in results.items():
        state = checkpoint.load(store.checkpoint_path(name))
        assert state["iteration"] == result["config"]["protocol"]["iterations"]


def _figure(name: str, run: Path, with_results: bool = True):
    store = ResultStore(run)
    cells = expand([name], "smoke", 1, SHORT)
    fig_def = load_table_def(name)
    results = [r for r in placed_results(store, cells) if r["table"] == name] if with_results else []
    return FIGURES[name].render(fig_def, results, FigureContext(run / "tables", store))


@pytest.mark.parametrize("name", sorted(FIGURES))
@pytest.mark.parametrize("with_results", [True, False])
def test_every_panel_has_labelled_axes_and_a_legend(figure_run: Path, name: str, with_results: bool):
    fig = _figure(name, figure_run, with_results)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert panels
    for ax in panels:
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), (name, ax.get_title())
    legends = [ax.get_legend() for ax in panels if ax.get_legend() is not None] + list(fig.legends)
    assert legends, name
    if with_results:
        assert all(len(legend.get_texts()) >= 2 for legend in legends), name
    assert fig._suptitle is not None and fig._suptitle.get_text()


def test_fig6_caption_reports_the_reconstruction_error(figure_run: Path):
    text = " ".join(_figure("fig6", figure_run)._suptitle.get_text().split())
    assert "held-out reconstruction error" in text and "before training" in text


def test_fig6_shows_its_decoder_bar_on_a_terminal_only(figure_run: Path, monkeypatch: pytest.MonkeyPatch):
    """Like the runner's bars: none in a log (stderr not a terminal)."""
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    class Recorded(Exception):
        """The decoder's settings are recorded: nothing to train."""

    shown = []

    def record(*args, progress: bool = False, **kwargs):
        shown.append(progress)
        raise Recorded
    monkeypatch.setattr(FigureContext, "cached", lambda self, key, compute: compute())
    monkeypatch.setattr(fig6_decoder, "load_trained", lambda *args: SimpleNamespace(
        learner=None, train_bank=None, test_bank=None))
    monkeypatch.setattr(fig6_decoder, "decoder_data", record)
    for stderr in (io.StringIO(), Terminal()):
        monkeypatch.setattr(sys, "stderr", stderr)
        with pytest.raises(Recorded):
            _figure("fig6", figure_run)
    assert shown == [False, True]


def test_figures_reuse_their_computed_data(figure_run: Path, monkeypatch: pytest.MonkeyPatch):
    """Drawing again loads the cached panel data: no model is loaded, nothing is trained."""
    def refuse(*args, **kwargs):
        raise AssertionError("the figure recomputed its data")
    for module in FIGURES.values():
        monkeypatch.setattr(module, "load_trained", refuse)
    for name in FIGURES:
        _figure(name, figure_run)


# --- the attack in pixel units on real miniImageNet images ---------------------------------------------------

def test_attack_on_real_mini_imagenet_stays_within_epsilon_and_the_pixel_range(mini_imagenet_root: Path):
    with zipfile.ZipFile(mini_imagenet_root / "mini_imagenet" / ZIP_NAME) as z:
        names = sorted(n for n in z.namelist() if n.startswith("miniImagenet/test/") and n.endswith(".jpg"))[:10]
        images = np.stack([rgb84(z.read(n), n) for n in names])
    mean, std = NORMALIZATIONS["train"]
    bank = ImageBank.from_numpy(images[None], ["test"], tuple(m / 255 for m in mean), tuple(s / 255 for s in std))
    x = bank.to_float(bank.images[0], torch.float64)
    spec = BackboneSpec(in_channels=3, image_size=84, channels=8, ways=5)
    learner = MetaLearner(spec, build_regularizer("none"), LearnerConfig(), seed=0, dtype=torch.float64)
    y = torch.arange(len(x)) % 5
    loss = lambda inputs: F.cross_entropy(  # noqa: E731
        query_logits(spec, learner.reg, learner.ops, learner.adapted, learner.meta_only, inputs), y)
    space = bank.pixel_space(torch.float64)
    s, m = (torch.tensor(v, dtype=torch.float64).view(3, 1, 1) for v in (bank.std, bank.mean))
    for epsilon in (0.01, 0.1):
        attacked = fast_gradient(loss, x, epsilon, "linf", space) * s + m
        raw = images.astype(np.float64) / 255
        change = np.abs(attacked.numpy() - raw)
        assert change.max() <= epsilon + 1e-9 and change.max() >= epsilon - 1e-9
        assert attacked.min() >= -1e-12 and attacked.max() <= 1 + 1e-12
