"""Figure 5 from synthetic robustness results: curves aggregated over seeds, PNG and PDF written."""
from __future__ import annotations

from pathlib import Path

import pytest

from tables import aggregate_robustness, load_table_def, plot_robustness
from tests.test_tables import make_result


def _curve(epsilons: list[float], start: float, seed: int) -> dict:
    means = [start - 100 * e + seed for e in epsilons]
    return {"epsilons": epsilons, "mean": means, "ci95": [0.5] * len(epsilons),
            "accuracies": [[m] * 4 for m in means]}


@pytest.fixture
def fig5_results() -> list[dict]:
    """MAML and meta-dropout on Omniglot (2 seeds each), MAML on miniImageNet; the FGSM rows missing."""
    fig = load_table_def("fig5")
    omni, mini = fig["attack_epsilons_by_column"]["omniglot_20w1s"], fig["attack_epsilons_by_column"]["mini_5w1s"]
    return [make_result("fig5", row, "omniglot_20w1s", seed, 95.0, robustness=_curve(omni, start, seed))
            for row, start in [("maml", 95.0), ("maml_meta_dropout", 96.5)] for seed in (0, 1)] + [
        make_result("fig5", "maml", "mini_5w1s", 0, 49.0, robustness=_curve(mini, 49.0, 0)),
        make_result("fig5", "maml_meta_dropout", "mini_5w1s", 0, 51.0, robustness=None)]


def test_robustness_curves_average_seeds(fig5_results: list[dict]) -> None:
    curves = aggregate_robustness(load_table_def("fig5"), fig5_results)
    first = curves[(curves["row"] == "maml") & (curves["column"] == "omniglot_20w1s")].iloc[0]
    assert first.epsilon == 0.0 and first.n_seeds == 2 and first["mean"] == pytest.approx(95.5)
    assert first.ci == pytest.approx(0.5)
    assert set(curves["row"]) == {"maml", "maml_meta_dropout"}


def test_plot_robustness_writes_png_and_pdf(tmp_path: Path, fig5_results: list[dict]) -> None:
    paths = plot_robustness(load_table_def("fig5"), fig5_results, tmp_path)
    assert [p.name for p in paths] == ["fig5.png", "fig5.pdf"]
    assert paths[0].read_bytes().startswith(b"\x89PNG") and paths[1].read_bytes().startswith(b"%PDF")
    assert all(p.stat().st_size > 1000 for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig5.pdf", "fig5.png"]


def test_plot_robustness_with_no_results(tmp_path: Path) -> None:
    paths = plot_robustness(load_table_def("fig5"), [], tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)
