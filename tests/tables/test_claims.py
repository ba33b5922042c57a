"""Claims as data, judged by rules a perfect replication passes: constructed paired accuracies with a clear effect,
no effect and a reversed one over seeds; one seed never reads reproduced or contradicted; comparisons the paper's
own numbers disagree with are left out; ties on the accuracy grid, a duplicated seed, shuffled and foreign
episodes, a reduced protocol; power that matches the rule (checked by simulation); the simulation mode from the
command line; the sources quoted verbatim from the paper; the claims table."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bench.util.errors import UserError
from tables.claims import claim_power, claim_tables, compared_claims, evaluate_claims, load_claims, select_claims
from tables.claims_simulation import simulated_claims
from tables.claims_table import render_claims_latex, render_claims_markdown, verdict_lines
from tables.paired import compare
from tables.stats import on_grid, wilcoxon_p
from tests.tables.test_paired_stats import episodes, result

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO.parent / "shared" / "paper" / "meta-dropout.txt"
COLUMN = "omniglot_20w1s"
GRID = 100 / (20 * 15)          # the column's accuracy grid: 20 ways x 15 queries


def one_claim(expect="greater", rows=("maml_meta_dropout",), versus=("maml",), columns=(COLUMN,), **extra):
    return {"alpha": 0.05, "power": 0.8, "claims": [
        {"id": "c", "claim": "a claim", "source": ["s"], "table": "table1", "rows": list(rows),
         "versus": list(versus), "columns": list(columns), "expect": expect, **extra}]}


def seeds_of(shift, seeds=5, n=1000, seed_sd=0.3, **extra):
    """Per-seed (row, reference) results on the grid: the row is the reference shifted by `shift` points plus a
    seed effect, episode noise of 3 points; each seed its own episodes."""
    rng = np.random.default_rng(0)
    rows, refs = [], []
    for s in range(seeds):
        base, _ = episodes(n=n, seed=s)
        row = base + shift + seed_sd * rng.standard_normal() + rng.normal(0, 3, n)
        rows.append(result("maml_meta_dropout", np.clip(on_grid(row, GRID), 0, 100), seed=s,
                           fingerprint=f"e{s}", **extra))
        refs.append(result("maml", base, seed=s, fingerprint=f"e{s}", **extra))
    return {"table1": rows + refs}


def judged(results, expect="greater", **extra):
    return evaluate_claims(one_claim(expect, **extra), results)[0]


def test_a_clear_effect_over_seeds_is_reproduced():
    claim = judged(seeds_of(2.0))
    assert claim.verdict == "reproduced" and claim.label == "reproduced"
    assert claim.seeds == 5 and claim.kept[0].outcome == "claimed"
    assert claim.seeds_needed is not None and claim.power_basis == "measured seed spread"


def test_no_effect_is_inconclusive_and_a_reversed_one_contradicted():
    assert judged(seeds_of(0.0)).verdict == "inconclusive"
    reversed_ = judged(seeds_of(-2.0))
    assert reversed_.verdict == "contradicted" and reversed_.kept[0].outcome == "opposite"
    assert reversed_.kept[0].p_opposite < 0.05


def test_one_seed_never_reproduces_or_contradicts():
    for shift in (5.0, -5.0):
        claim = judged(seeds_of(shift, seeds=1))
        assert claim.verdict == "one seed" and "not the method" in claim.why
        comparison = claim.kept[0].comparison
        assert comparison.ok and comparison.basis == "episodes" and comparison.wilcoxon < 1e-10
    assert "one seed" in render_claims_markdown([claim])


def test_not_greater_uses_the_declared_margin():
    """A margin of 2 points (the paper's +1.40 lies below it, so the comparison is kept): worse and equal rows
    reproduce, a row significantly above the margin contradicts, one at the margin is inconclusive."""
    def verdict(shift):
        return judged(seeds_of(shift), "not_greater", margin=2.0, margin_reason="r").verdict
    assert verdict(-2.0) == "reproduced" and verdict(0.0) == "reproduced"
    assert verdict(5.0) == "contradicted" and verdict(2.0) == "inconclusive"
    left_out = judged(seeds_of(0.0), "not_greater", margin=1.0, margin_reason="r")
    assert not left_out.kept and left_out.disagree[0].paper_diff > 1.0   # the paper's own +1.40 is above 1


def test_comparisons_the_papers_numbers_disagree_with_are_left_out():
    """Meta-SGD + meta-dropout vs Meta-SGD on miniImageNet 5-shot: 65.55 both in the paper."""
    config = one_claim(rows=("metasgd_meta_dropout",), versus=("metasgd",), columns=("mini_5w5s", COLUMN))
    claim = evaluate_claims(config, {})[0]
    assert [t.comparison.column for t in claim.disagree] == ["mini_5w5s"] and claim.disagree[0].paper_diff == 0
    assert [t.comparison.column for t in claim.kept] == [COLUMN]
    assert "the paper's own numbers disagree" in render_claims_markdown([claim])


def test_differences_equal_on_the_grid_are_ties_for_the_rank_test():
    """Differences of one grid step computed from different accuracies differ in the last bit; on the grid they
    are tied, and Wilcoxon with mid-ranks agrees with the exact answer on integer steps."""
    rng = np.random.default_rng(4)
    steps = rng.choice([-2, -1, 1, 1, 2], size=60)
    start = rng.integers(0, 280, size=60)
    a, b = (start + steps) * GRID, start * GRID
    noisy = a - b
    assert len(np.unique(noisy)) > len(np.unique(steps))              # the float noise breaks the ties
    exact = stats.wilcoxon(steps.astype(float), zero_method="wilcox").pvalue
    assert wilcoxon_p(on_grid(noisy, GRID)) == pytest.approx(exact)
    c = compare("t", "row", "ref", COLUMN, [result("row", a)], [result("ref", b)])
    assert c.wilcoxon == pytest.approx(exact)


def test_a_duplicated_seed_is_an_error_never_p_zero():
    results = seeds_of(1.0, seeds=1)
    row, ref = results["table1"]
    twice = {"table1": [row, {**row, "seed": 1}, ref, {**ref, "seed": 1}]}
    claim = judged(twice)
    comparison = claim.kept[0].comparison
    assert comparison.status == "invalid" and "duplicated seed" in comparison.reason
    assert claim.verdict == "inconclusive"


def test_episodes_are_matched_by_id_and_foreign_ones_are_unpaired():
    base, _ = episodes(n=200)
    ids = [f"ep{i}" for i in range(200)]
    row = np.clip(base + 2 + np.random.default_rng(1).normal(0, 1, 200), 0, 100)
    straight = compare("t", "row", "ref", COLUMN, [result("row", row, ids=ids)], [result("ref", base, ids=ids)])
    order = np.random.default_rng(2).permutation(200)
    shuffled = compare("t", "row", "ref", COLUMN, [result("row", row[order], ids=[ids[i] for i in order])],
                       [result("ref", base, ids=ids)])
    assert shuffled.ok and shuffled.episodes.mean == pytest.approx(straight.episodes.mean)
    assert shuffled.wilcoxon == pytest.approx(straight.wilcoxon)
    foreign = compare("t", "row", "ref", COLUMN, [result("row", row, ids=[f"x{i}" for i in range(200)])],
                      [result("ref", base, ids=ids)])
    assert foreign.status == "unpaired" and "different test episodes" in foreign.reason


def test_a_damaged_curve_point_is_invalid_not_rendered():
    base, _ = episodes(n=300)
    good = result("row", base)
    damaged = result("ref", base)
    damaged["test_curve"] = [{"iteration": 10, "accuracies": [float(a) for a in base[:299]], "episodes": {}}]
    good["test_curve"] = [{"iteration": 10, "accuracies": [float(a) for a in base], "episodes": {}}]
    c = compare("t", "row", "ref", COLUMN, [good], [damaged], ("iteration", 10))
    assert c.status == "invalid" and "299 accuracies for 300" in c.reason


def test_a_reduced_protocol_is_named_in_every_verdict():
    results = seeds_of(2.0, preset="cpu_study", protocol={"iterations": 4000, "channels": 32})
    claim = judged(results)
    assert claim.verdict == "reproduced" and claim.label.startswith("reproduced at reduced protocol")
    assert "iterations 4000 (paper 40000)" in claim.label and "preset cpu_study" in claim.label
    markdown = render_claims_markdown([claim])
    assert "REDUCED PROTOCOL" in markdown and "| reproduced |" not in markdown


def test_power_matches_the_rule():
    """At the seeds the power column recommends, at least 70% of simulated perfect replications reproduce."""
    config = load_claims()
    one = {**config, "claims": [c for c in config["claims"] if c["id"] == "md_beats_mixup"]}
    needed = simulated_claims(one, 1)[0].seeds_needed
    assert needed is not None and 2 <= needed <= 10
    hits = [simulated_claims(one, needed, rng_seed=s)[0].verdict for s in range(30)]
    assert hits.count("reproduced") >= 0.7 * len(hits)
    assert claim_power([], "greater", 0.0, 5)[0] is None


def test_a_perfect_replication_passes_with_seeds_and_never_with_one():
    config = load_claims()
    one = [r.verdict for r in simulated_claims(config, 1)]
    assert "reproduced" not in one and "contradicted" not in one
    five = [r.verdict for r in simulated_claims(config, 5)]
    assert "contradicted" not in five and five.count("reproduced") >= 2


def test_simulate_from_the_command_line(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "run_all.py"), "--claims", "--simulate", "--seeds", "5",
                          "--results", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = (tmp_path / "tables" / "claims_simulated.md").read_text()
    assert text.startswith("# SIMULATED: the verdicts a perfect replication with 5 seeds")
    for claim in compared_claims(load_claims()):
        assert re.search(rf"^  {claim['id']}: (reproduced|inconclusive|not run)", out.stderr, re.M), claim["id"]
    refused = subprocess.run([sys.executable, str(REPO / "run_all.py"), "--simulate"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "use it with --claims" in refused.stderr


def test_the_paper_claims_config_is_valid_and_quotes_the_paper():
    config = load_claims()
    assert set(claim_tables(config)) == {"table1", "table2", "table3", "fig5"}
    assert len({c["id"] for c in config["claims"]}) == len(config["claims"])
    robustness = next(c for c in config["claims"] if c["id"] == "md_more_robust")
    assert robustness["norms"] == ["linf"]
    assert all("margin_reason" in c for c in compared_claims(config) if c["expect"] == "not_greater")
    if not PAPER.exists():
        pytest.skip(f"needs the paper's text as plain text at {PAPER} (not shipped with the suite)")
    text = re.sub(r"\s+", " ", PAPER.read_text(encoding="utf-8"))
    for claim in config["claims"]:
        for fragment in claim["source"]:
            assert re.sub(r"\s+", " ", fragment) in text, (claim["id"], fragment)


def test_claims_table_renders_every_claim():
    config = load_claims()
    claims = evaluate_claims(config, seeds_of(2.0))
    assert claims[0].verdict == "inconclusive"              # 1 of 4 columns run
    assert {c.verdict for c in claims[1:] if not c.claim.get("qualitative")} == {"not run"}
    markdown = render_claims_markdown(claims)
    for number, claim in enumerate(config["claims"], 1):
        assert claim["claim"] in markdown and f"| **{number}** |" in markdown
    assert "Decision rules" in markdown and "Sources" in markdown and "qualitative, not tested" in markdown
    assert len(verdict_lines(claims)) == len(config["claims"])
    latex = render_claims_latex(claims)
    assert latex.count(r"\midrule") == len(config["claims"]) + 2        # one per claim, two under the headers
    assert "γ" not in latex and "Δ" not in latex and "±" not in latex and "…" not in latex


def test_claims_paired_and_paired_block_compile_with_pdflatex(tmp_path):
    import shutil

    from tables import latex_document, load_table_def, render_latex
    from tables.paired_table import render_paired_latex
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not on PATH (install texlive-latex-base and texlive-latex-recommended)")
    results = seeds_of(2.0, preset="cpu_study", protocol={"iterations": 4000})
    table1 = load_table_def("table1")
    fragments = [render_latex(table1, results["table1"], paired=True), render_paired_latex([table1], results),
                 render_claims_latex(evaluate_claims(load_claims(), results))]
    (tmp_path / "t.tex").write_text(latex_document(fragments), encoding="utf-8")
    done = subprocess.run(["pdflatex", "-halt-on-error", "-interaction=nonstopmode", "t.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "Overfull" not in done.stdout


def test_claims_can_be_selected_and_narrowed_to_the_columns_run():
    config = load_claims()
    one = select_claims(config, "md_improves_maml", {COLUMN})
    assert [c["id"] for c in one["claims"]] == ["md_improves_maml"] and one["claims"][0]["columns"] == [COLUMN]
    claim = evaluate_claims(one, seeds_of(2.0))[0]
    assert claim.verdict == "reproduced"                     # the one column run, not "1 of 4 columns run"
    assert "only Omniglot 20-way 1-shot, the columns run" in render_claims_markdown([claim])
    assert select_claims(config)["claims"] == config["claims"]
    with pytest.raises(UserError, match=r"unknown claim 'md_improves_mam'; the claims are md_improves_maml, "):
        select_claims(config, "md_improves_mam")


def test_grouped_rows_are_named_with_their_group_in_the_claims():
    config = select_claims(load_claims(), "md_beats_information_regularizers")
    markdown = render_claims_markdown(evaluate_claims(config, {}))
    compared = re.findall(r"\| Meta-dropout: Multiplicative vs\. ([^|]+), Omniglot 20-way 1-shot \|", markdown)
    assert len(compared) == 6 and len(set(compared)) == 6, compared        # VIB and Information Dropout apart
