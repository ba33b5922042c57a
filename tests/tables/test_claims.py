"""Claims as data: verdicts on constructed paired accuracies (reproduced, contradicted, inconclusive, not run),
power, the sources quoted verbatim from the paper, and the claims table."""
import re
from pathlib import Path

import numpy as np
import pytest

from tables.claims import claim_tables, evaluate_claims, load_claims
from tables.claims_table import render_claims_latex, render_claims_markdown
from tests.tables.test_paired_stats import episodes, result

PAPER = Path(__file__).resolve().parents[3] / "shared" / "paper" / "meta-dropout.txt"
COLUMN = "omniglot_20w1s"


def one_claim(expect="greater", **extra):
    return {"alpha": 0.05, "power": 0.8, "claims": [
        {"id": "c", "claim": "MAML + meta-dropout beats MAML", "source": ["s"], "table": "table1",
         "rows": ["maml_meta_dropout"], "versus": ["maml"], "columns": [COLUMN], "expect": expect, **extra}]}


def judged(row_accuracies, ref_accuracies, expect="greater", dataset="omniglot", **extra):
    results = {"table1": [result("maml_meta_dropout", row_accuracies, dataset=dataset),
                          result("maml", ref_accuracies, dataset=dataset)]}
    return evaluate_claims(one_claim(expect, **extra), results)[0]


def noisy_shift(shift, n=1000, seed=0):
    base, _ = episodes(n=n, seed=seed)
    return np.clip(base + shift + np.random.default_rng(seed + 10).normal(0, 3, n), 0, 100), base


def test_a_real_improvement_is_reproduced_with_its_power():
    row, ref = noisy_shift(2.0)
    claim = judged(row, ref)
    assert claim.verdict == "reproduced"
    tested = claim.tested[0]
    assert tested.paper_diff == pytest.approx(96.63 - 95.23)
    assert tested.episodes_needed is not None and tested.episodes_needed > 2
    assert tested.seeds_needed is None                      # one seed: no across-seed deviation yet


def test_too_few_episodes_is_inconclusive():
    row, ref = noisy_shift(1.0, n=5)
    assert judged(row, ref).verdict == "inconclusive"


def test_an_opposite_significant_difference_is_contradicted():
    row, ref = noisy_shift(-2.0)
    assert judged(row, ref).verdict == "contradicted"


def test_not_greater_claims():
    worse, ref = noisy_shift(-2.0)
    assert judged(worse, ref, "not_greater").verdict == "reproduced"
    better, ref = noisy_shift(2.0)
    assert judged(better, ref, "not_greater").verdict == "contradicted"
    tie = np.random.default_rng(0).permutation(ref)
    assert judged(tie, ref, "not_greater").verdict == "inconclusive"
    assert judged(tie, ref, "not_greater", margin=5.0).verdict == "reproduced"


def test_missing_cells_are_not_run_and_synthetic_data_ranks_nothing():
    assert evaluate_claims(one_claim(), {})[0].verdict == "not run"
    row, ref = noisy_shift(5.0)
    claim = judged(row, ref, dataset="synthetic")
    assert claim.verdict == "inconclusive" and "synthetic" in claim.tested[0].why
    assert "rank nothing" in render_claims_markdown([claim])


def test_the_paper_claims_config_is_valid_and_quotes_the_paper():
    config = load_claims()
    assert set(claim_tables(config)) == {"table1", "table2", "table3", "fig5"}
    assert len({c["id"] for c in config["claims"]}) == len(config["claims"])
    if not PAPER.exists():
        pytest.skip(f"the paper's text is not at {PAPER}")
    text = re.sub(r"\s+", " ", PAPER.read_text(encoding="utf-8"))
    for claim in config["claims"]:
        for fragment in claim["source"]:
            assert re.sub(r"\s+", " ", fragment) in text, (claim["id"], fragment)


def test_claims_table_renders_every_claim():
    config = load_claims()
    row, ref = noisy_shift(2.0)
    results = {"table1": [result("maml_meta_dropout", row), result("maml", ref)]}
    claims = evaluate_claims(config, results)
    assert claims[0].verdict == "inconclusive"              # 1 of 4 columns run, none contradicted
    assert {c.verdict for c in claims[1:]} == {"not run"}
    markdown = render_claims_markdown(claims)
    for number, claim in enumerate(config["claims"], 1):
        assert claim["claim"] in markdown and f"| **{number}** |" in markdown
    assert "reproduced" in markdown and "Sources" in markdown
    latex = render_claims_latex(claims)
    assert latex.count(r"\midrule") == len(config["claims"]) + 2        # one per claim, two under the headers
    assert "γ" not in latex and "Δ" not in latex and "±" not in latex and "…" not in latex


def test_claims_paired_and_paired_block_compile_with_pdflatex(tmp_path):
    import shutil
    import subprocess

    from tables import latex_document, load_table_def, render_latex
    from tables.paired_table import render_paired_latex
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not on PATH (install texlive-latex-base and texlive-latex-recommended)")
    row, ref = noisy_shift(2.0)
    results = {"table1": [result("maml_meta_dropout", row), result("maml", ref)]}
    table1 = load_table_def("table1")
    fragments = [render_latex(table1, results["table1"], paired=True), render_paired_latex([table1], results),
                 render_claims_latex(evaluate_claims(load_claims(), results))]
    (tmp_path / "t.tex").write_text(latex_document(fragments), encoding="utf-8")
    done = subprocess.run(["pdflatex", "-halt-on-error", "-interaction=nonstopmode", "t.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "Overfull" not in done.stdout
