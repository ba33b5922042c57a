"""Figure 5 from synthetic robustness results: panels per (protocol, attack norm), curves aggregated over seeds,
PNG and PDF written for the published panels and the extra one; the cells' attacks come from the panels."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.data.pixels import PIXEL_UNITS
from bench.runner.cells import expand
from tables import aggregate_robustness, attacks_of, load_table_def, plot_robustness
from tables.claims import _metrics, load_claims
from tables.figures.fig5_robustness import robustness_figure
from tables.paired import measure
from tests.tables.test_tables import make_result


def _curves(attacks: dict[str, list[float]], start: float, seed: int) -> dict:
    norms = {}
    for norm, epsilons in attacks.items():
        scale = max(epsilons) or 1.0
        means = [start - 50 * e / scale + seed for e in epsilons]
        norms[norm] = {"epsilons": epsilons, "mean": means, "ci95": [0.5] * len(epsilons),
                       "accuracies": [[m] * 10 for m in means]}
    return {"units": PIXEL_UNITS, "attack": "fast gradient method", "norms": norms}


@pytest.fixture
def fig5_results() -> list[dict]:
    """MAML and meta-dropout on Omniglot 1-shot (2 seeds each), MAML on miniImageNet; most rows missing."""
    fig = load_table_def("fig5")
    omni = attacks_of(fig, "maml", "omniglot_20w1s")
    return [make_result("fig5", row, "omniglot_20w1s", seed, 95.0, robustness=_curves(omni, start, seed))
            for row, start in [("maml", 95.0), ("maml_meta_dropout", 96.5)] for seed in (0, 1)] + [
        make_result("fig5", "maml", "mini_5w1s", 0, 49.0, robustness=_curves(attacks_of(fig, "maml", "mini_5w1s"),
                                                                              49.0, 0)),
        make_result("fig5", "maml_meta_dropout", "mini_5w1s", 0, 51.0, robustness=None)]


def test_robustness_curves_average_seeds(fig5_results: list[dict]) -> None:
    curves = aggregate_robustness(load_table_def("fig5"), fig5_results)
    first = curves[(curves["row"] == "maml") & (curves["column"] == "omniglot_20w1s") & (curves["norm"] == "l1")]
    first = first.iloc[0]
    assert first.epsilon == 0.0 and first.n_seeds == 2 and first["mean"] == pytest.approx(95.5)
    assert first.ci == pytest.approx(0.5)
    assert set(curves["row"]) == {"maml", "maml_meta_dropout"}
    assert set(curves["norm"]) == {"l1", "l2", "linf"}


def test_results_in_other_units_are_not_drawn(fig5_results: list[dict]) -> None:
    old = dict(fig5_results[0], robustness={"epsilons": [0.0, 0.1], "mean": [90.0, 80.0], "ci95": [1.0, 1.0]})
    curves = aggregate_robustness(load_table_def("fig5"), [old])
    assert curves.empty


def test_plot_robustness_writes_the_published_and_the_extra_figure(tmp_path: Path, fig5_results: list[dict]) -> None:
    paths = plot_robustness(load_table_def("fig5"), fig5_results, tmp_path)
    assert [p.name for p in paths] == ["fig5.png", "fig5.pdf", "fig5_extra.png", "fig5_extra.pdf"]
    for png, pdf in (paths[:2], paths[2:]):
        assert png.read_bytes().startswith(b"\x89PNG") and pdf.read_bytes().startswith(b"%PDF")
        assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000


def test_fig5_has_the_published_panels_with_labels_legends_and_caption(fig5_results: list[dict]) -> None:
    fig_def = load_table_def("fig5")
    published = [p for p in fig_def["panels"] if not p.get("extra")]
    fig = robustness_figure(fig_def, fig5_results, published)
    assert [(p["column"], p["norm"]) for p in published] == [
        ("omniglot_20w1s", "l1"), ("omniglot_20w1s", "l2"), ("omniglot_20w1s", "linf"), ("omniglot_20w5s", "linf")]
    for ax, panel in zip(fig.axes, published):
        assert "pixels on the [0, 1] scale" in ax.get_xlabel() and ax.get_ylabel()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(labels) == len(panel["rows"]) and any("Meta-dropout" in t for t in labels)
        assert any("Adv. training" in t for t in labels) and any("VIB" in t for t in labels)
    text = fig._suptitle.get_text()
    assert "fast gradient" in text and "pixel units on the [0, 1] scale" in text and "l2" in text


def test_plot_robustness_with_no_results(tmp_path: Path) -> None:
    paths = plot_robustness(load_table_def("fig5"), [], tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)


def test_cells_get_the_attacks_of_their_panels() -> None:
    cells = {(c["protocol"]["name"], c["regularizer"], tuple(sorted(c["hyper"].items()))): c
             for c in expand(["fig5"], "smoke", 1, {})}
    maml = cells[("omniglot_20w1s", "none", ())]["attacks"]
    assert maml == {"l1": [0, 20, 40, 60, 80, 100], "l2": [0, 1, 2, 3, 4, 5],
                    "linf": [0, 0.02, 0.04, 0.06, 0.08, 0.1]}
    adv_l2 = cells[("omniglot_20w1s", "fgsm", (("clamp", True), ("epsilon", 5), ("norm", "l2")))]["attacks"]
    assert adv_l2 == {"l2": [0, 1, 2, 3, 4, 5]}
    mini = cells[("mini_5w1s", "meta_dropout", ())]["attacks"]
    assert list(mini) == ["linf"] and max(mini["linf"]) == 0.1
    vib = [c for key, c in cells.items() if key[1] == "vib"]
    assert {(c["protocol"]["name"], c["hyper"]["beta"]) for c in vib} == {("omniglot_20w1s", 1e-3),
                                                                           ("omniglot_20w5s", 1e-5)}


def test_the_robustness_claim_compares_the_published_fgsm_panels(fig5_results: list[dict]) -> None:
    """Figure 5's claim (meta-dropout vs MAML under FGSM) covers every size > 0 of the l-infinity panels both rows
    are attacked with (the other norms are reported, not part of the claim), and reads the per-episode accuracies
    of the norm-keyed results."""
    fig = load_table_def("fig5")
    claim = next(c for c in load_claims()["claims"] if c.get("table") == "fig5")
    metrics = _metrics(fig, claim, "maml_meta_dropout", "maml", "omniglot_20w1s")
    assert {m[2] for m in metrics} == {"linf"} and len(metrics) == 5 and all(m[1] > 0 for m in metrics)
    assert {m[2] for m in _metrics(fig, {**claim, "norms": None}, "maml_meta_dropout", "maml",
                                   "omniglot_20w1s")} == {"l1", "l2", "linf"}
    maml = next(r for r in fig5_results if r["row"] == "maml" and r["column"] == "omniglot_20w1s")
    accuracies, _ = measure(maml, ("fgsm", 40.0, "l1"))
    assert accuracies.tolist() == [maml["robustness"]["norms"]["l1"]["mean"][2]] * 10
    assert measure(maml, ("fgsm", 40.0, "l2")) is None
