"""Paired statistics on constructed per-episode accuracies with known answers: shifts are found, permutations are
not, Holm adjusts as specified, pairing is checked by fingerprints, and the paired CI beats the unpaired one."""
import math

import numpy as np
import pytest
from scipy import stats

from bench.store.protocol import load_protocol, protocol_names
from tables import load_table_def, render_latex, render_markdown
from tables.paired import compare, reference_of, table_comparisons
from tables.stats import holm, power_of_t_test, required_n, t_interval, unpaired_interval, won_tied_lost

PROTOCOLS = set(protocol_names())


def result(row, accuracies, seed=0, column="omniglot_20w1s", table="table1", fingerprint="episodes-A",
           dataset="omniglot", preset="paper", protocol=None, ids=None):
    """A result dict shaped like a placed cell JSON, with per-episode accuracies: the paper protocol of the column
    (as many test episodes as accuracies) unless `protocol` changes settings."""
    accuracies = [float(a) for a in accuracies]
    settings = {**load_protocol(column if column in PROTOCOLS else "omniglot_20w1s").to_dict(), "dataset": dataset,
                "test_episodes": len(accuracies), **(protocol or {})}
    episodes = {"fingerprint": fingerprint, **({"ids": list(ids)} if ids is not None else {})}
    return {"table": table, "row": row, "column": column, "seed": seed,
            "config": {"preset": preset, "protocol": settings},
            "code_version": "abc", "test": {"accuracies": accuracies, "mean": float(np.mean(accuracies)),
                                            "ci95": 1.0, "std": 1.0, "n_episodes": len(accuracies),
                                            "episodes": episodes}}


def episodes(n=1000, seed=0, ways=20, queries=15):
    """Per-episode accuracies (percent) of a model with a per-episode difficulty, as a meta-test gives."""
    rng = np.random.default_rng(seed)
    difficulty = rng.beta(8, 2, n)
    return 100 * rng.binomial(ways * queries, difficulty) / (ways * queries), difficulty


def test_a_shifted_copy_is_detected():
    base, _ = episodes()
    shifted = np.clip(base + 1.0 + np.random.default_rng(1).normal(0, 0.5, len(base)), 0, 100)
    c = compare("t", "row", "ref", "col", [result("row", shifted)], [result("ref", base)])
    assert c.ok and c.wilcoxon < 1e-10 and c.episodes.low > 0
    assert c.episodes.mean == pytest.approx(np.mean(shifted - base))
    assert c.won_tied_lost[0] > 0.9


def test_a_permuted_copy_is_not_detected():
    base, _ = episodes()
    permuted = np.random.default_rng(2).permutation(base)
    c = compare("t", "row", "ref", "col", [result("row", permuted)], [result("ref", base)])
    assert c.ok and c.wilcoxon > 0.05 and c.episodes.low < 0 < c.episodes.high
    assert c.episodes.mean == pytest.approx(0.0, abs=1e-9)


def test_paired_ci_is_narrower_than_unpaired_for_correlated_cells():
    rng = np.random.default_rng(3)
    _, difficulty = episodes()
    a = 100 * rng.binomial(300, difficulty) / 300
    b = 100 * rng.binomial(300, np.clip(difficulty + 0.01, 0, 1)) / 300     # same episodes, correlated
    assert np.corrcoef(a, b)[0, 1] > 0.5
    paired = t_interval(b - a)
    unpaired = unpaired_interval(b, a)
    assert paired.mean == pytest.approx(unpaired.mean)
    assert paired.half_width < 0.6 * unpaired.half_width


def test_interval_formulas():
    values = np.array([1.0, 2.0, 4.0])
    interval = t_interval(values)
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3)
    assert interval.mean == pytest.approx(7 / 3) and interval.half_width == pytest.approx(half)
    assert interval.p == pytest.approx(stats.ttest_1samp(values, 0).pvalue)
    assert math.isnan(t_interval(np.array([1.0])).low)
    assert won_tied_lost(np.array([1.0, 0.0, -2.0, 3.0])) == (0.5, 0.25, 0.25)


def test_holm_adjusts_as_specified():
    adjusted = holm([0.01, 0.04, 0.03, 0.005, math.nan])
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> kept monotone at 0.06
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(adjusted[4])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_across_seeds_uses_the_per_seed_differences():
    rows, refs, per_seed = [], [], []
    for seed, shift in enumerate([0.5, 1.5, 1.0]):
        base = 0.9 * episodes(n=200, seed=seed)[0]               # room for the shift below 100
        rows.append(result("row", base + shift, seed))
        refs.append(result("ref", base, seed))
        per_seed.append(shift)
    c = compare("t", "row", "ref", "col", rows, refs)
    assert c.basis == "seeds" and c.seeds == [0, 1, 2] and c.n_episodes == 600
    expected = t_interval(np.array(per_seed))
    assert c.across_seeds.mean == pytest.approx(1.0) and c.across_seeds.half_width == pytest.approx(expected.half_width)
    assert c.p == c.across_seeds.p and c.sd_seed == pytest.approx(0.5)


def test_pairing_is_checked_never_assumed():
    base, _ = episodes(n=50)
    c = compare("t", "row", "ref", "col", [result("row", base + 1, fingerprint="B")], [result("ref", base)])
    assert c.status == "unpaired" and "different test episodes" in c.reason
    legacy = result("ref", base)
    del legacy["test"]["episodes"]
    assert compare("t", "row", "ref", "col", [result("row", base)], [legacy]).status == "unpaired"
    missing = compare("t", "row", "ref", "col", [], [result("ref", base)])
    assert missing.status == "missing" and missing.reason == "no result for row"


def test_required_sample_size_reaches_the_power():
    n = required_n(1.0, 10.0)
    assert power_of_t_test(n, 1.0, 10.0) >= 0.8 > power_of_t_test(n - 1, 1.0, 10.0)
    assert 785 <= n <= 790                                 # the normal approximation gives 784.9
    assert required_n(0.0, 1.0) is None and required_n(1.0, math.nan) is None
    assert required_n(2.0, 1.0) >= 2


def test_references_and_the_paired_column_block():
    table1 = load_table_def("table1")
    refs = {row["id"]: reference_of(table1, row) for row in table1["rows"]}
    assert refs == {"maml": None, "metasgd": "maml", "maml_meta_dropout": "maml", "metasgd_meta_dropout": "metasgd"}
    base, _ = episodes(n=100)
    results = [result("maml", base), result("maml_meta_dropout", np.clip(base + 2, 0, 100))]
    comparisons = {(c.row, c.column): c for c in table_comparisons(table1, results)}
    assert comparisons[("maml_meta_dropout", "omniglot_20w1s")].ok
    assert comparisons[("metasgd", "omniglot_20w1s")].status == "missing"
    plain, paired = render_markdown(table1, results), render_markdown(table1, results, paired=True)
    assert "Δ Omniglot 20-way 1-shot" in paired and "Δ Omniglot 20-way 1-shot" not in plain
    line = next(l for l in paired.splitlines() if l.startswith("| MAML + Meta-dropout"))
    assert line.count("|") == 1 + 8 + 1 and "Holm p" in line
    latex = render_latex(table1, results, paired=True)
    assert r"Paired $\Delta$" in latex and r"l*{8}{c}" in latex
