"""Table definitions, the paper's numbers, aggregation, and Markdown/LaTeX rendering from synthetic results."""
from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.util.errors import UserError
from regularizers import REGISTRY
from tables import (aggregate, cells, latex_document, load_table_def, paper_runs, render_latex, render_markdown,
                    row_columns, write_tables)
from tables.paper import Reported, cited_rows, parse_reported
from tables.run_protocols import with_run_protocols
from bench.store.protocol import load_protocol

REPO = Path(__file__).resolve().parents[2]
PAPER_TEXT = REPO.parent / "shared" / "paper" / "meta-dropout.txt"
TABLES = ["table1", "table2", "table3"]          # the paper's tables; a researcher's own rows or tables may be added


def make_result(table: str, row: str, column: str, seed: int, mean: float, ci: float = 0.2,
                robustness: dict | None = None, preset: str = "paper", protocol: dict | None = None) -> dict:
    """A result dict shaped like the runner's per-cell JSON: the paper's protocol of the column (10 test episodes,
    which change no estimate) unless `protocol` changes settings."""
    settings = {**load_protocol(column).to_dict(), "test_episodes": 10, **(protocol or {})}   # 10 accuracies
    return {"table": table, "row": row, "column": column, "seed": seed,
            "config": {"learner": "maml", "regularizer": "none", "hyper": {}, "preset": preset,
                       "protocol": settings},
            "code_version": "0123456789abcdef", "device": "cpu",
            "test": {"accuracies": [mean] * 10, "mean": mean, "ci95": ci, "std": 1.0, "n_episodes": 10},
            "robustness": robustness, "training": {}, "timings": {}}


@pytest.fixture
def table2_results() -> list[dict]:
    """Table 2 with MAML over 3 seeds, meta-dropout best in column 1, and most cells missing."""
    return [make_result("table2", "maml", "omniglot_20w1s", seed, mean) for seed, mean in
            enumerate([94.0, 95.0, 96.0])] + [
        make_result("table2", "meta_dropout", "omniglot_20w1s", 0, 97.13, 0.15),
        make_result("table2", "vib_1e-5", "mini_5w1s", 0, 47.5, 0.6),
        make_result("table1", "maml", "omniglot_20w1s", 0, 10.0),  # another table: ignored
    ]


@pytest.mark.parametrize("name", TABLES + ["fig4", "fig5", "fig6", "fig7", "choices"])
def test_table_defs_are_valid(name: str) -> None:
    table_def = load_table_def(name)
    assert table_def["name"] == name
    for row in table_def["rows"]:
        assert row["regularizer"] in REGISTRY, row
        assert isinstance(row["hyper"], dict)


@pytest.mark.parametrize("name", TABLES)
def test_every_paper_row_is_run_with_a_number_in_every_column(name: str) -> None:
    table_def = load_table_def(name)
    paper = paper_runs(name)
    rows = {row["id"]: row for row in table_def["rows"]}
    assert paper and set(paper) <= set(rows), set(paper) - set(rows)
    for row_id, reported_cells in paper.items():
        assert row_columns(table_def, rows[row_id]) == table_def["columns"], row_id
        for column in table_def["columns"]:
            reported = reported_cells.get(column)
            assert reported is not None and reported.ci is not None, (name, row_id, column)


def test_fig5_adversarial_rows_are_restricted_to_their_panels() -> None:
    fig = load_table_def("fig5")
    runs = {(c["row"], c["column"]): c["hyper"] for c in cells(fig)}
    assert runs[("adv_l1_100", "omniglot_20w1s")] == {"epsilon": 100, "norm": "l1", "clamp": True}
    assert runs[("adv_linf_0.01", "mini_5w1s")] == {"epsilon": 0.01, "norm": "linf", "clamp": True}
    assert ("adv_l1_100", "mini_5w1s") not in runs and ("adv_l2_5", "omniglot_20w5s") not in runs
    assert {p["column"] for p in fig["panels"]} == set(fig["columns"])


def test_a_panel_showing_a_row_its_column_does_not_run_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "fig.yaml"
    bad.write_text("name: fig\ntitle: t\ncolumns: [mini_5w1s]\npanels:\n  - {column: mini_5w1s, norm: linf, "
                   "epsilons: [0], rows: [other]}\nrows:\n  - {id: maml, label: M, learner: maml, regularizer: none}\n")
    with pytest.raises(UserError, match="panel"):
        load_table_def(bad)


def test_unknown_or_bad_table_raises_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="known tables: .*table1"):
        load_table_def("table9")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML.*table2") as info:
        load_table_def(bad)
    assert "\n" not in str(info.value)


def _normalise(cell: str) -> str:
    cell = cell.replace("\\scriptstyle", "").replace("\\pm", "±")
    return re.sub(r"[${}\s]+", " ", cell).strip()


def _paper_block(start: str, end: str) -> list[list[Reported | None]]:
    """The 4 numeric cells of every data line between the line starting with `start` and the one with `end`."""
    lines = PAPER_TEXT.read_text(encoding="utf-8").splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    last = next(i for i, line in enumerate(lines) if i > first and line.startswith(end))
    rows = []
    for line in lines[first + 1:last]:
        fields = [_normalise(f) for f in line.rstrip().split("\t")[-4:]]
        try:
            parsed = [None if f == "-" else parse_reported(f) for f in fields]
        except ValueError:
            continue
        if len(parsed) == 4 and any(parsed):
            rows.append(parsed)
    return rows


TABLE1_PAPER_ORDER = ["meta_lstm", "matching_nets", "protonets", "protonets_higher_way", "maml", "metasgd",
                      "reptile", "amortized_bayesian_ml", "probabilistic_maml", "mt_net", "cavia_512",
                      "maml_meta_dropout", "metasgd_meta_dropout"]


@pytest.mark.parametrize("name,start,end", [("table1", "Models\t1-shot", "Table 1:"),
                                            ("table2", "Models\tNoise", "Table 2:"),
                                            ("table3", "(MAML+)", "Table 3:")])
def test_paper_numbers_match_the_paper_text(name: str, start: str, end: str) -> None:
    if not PAPER_TEXT.is_file():
        pytest.skip(f"needs the paper's text as plain text at {PAPER_TEXT} (not shipped with the suite)")
    table_def = load_table_def(name)
    stored = {**paper_runs(name), **{row["id"]: row["cells"] for row in cited_rows(name)}}
    order = TABLE1_PAPER_ORDER if name == "table1" else [row["id"] for row in table_def["rows"] if row["id"] in stored]
    in_text = _paper_block(start, end)
    assert len(in_text) == len(order)
    for row_id, text_cells in zip(order, in_text):
        assert [stored[row_id].get(c) for c in table_def["columns"]] == text_cells, row_id


def test_aggregate_means_spread_and_paper(table2_results: list[dict]) -> None:
    frame = aggregate(load_table_def("table2"), table2_results).set_index(["row", "column"])
    maml = frame.loc[("maml", "omniglot_20w1s")]
    assert maml.n_seeds == 3 and maml["mean"] == pytest.approx(95.0)
    assert maml.seed_std == pytest.approx(1.0) and maml.ci == pytest.approx(0.2)
    assert maml.paper_mean == 95.23 and maml.paper_ci == 0.17 and maml["diff"] == pytest.approx(-0.23)
    assert math.isnan(frame.loc[("meta_dropout", "omniglot_20w1s")].seed_std)
    missing = frame.loc[("mixup_1", "mini_5w5s")]
    assert missing.n_seeds == 0 and math.isnan(missing["mean"]) and missing.paper_mean == 62.32
    table2 = load_table_def("table2")
    assert len(frame) == len(table2["rows"]) * len(table2["columns"]) and len(paper_runs("table2")) == 12


def test_markdown_marks_best_missing_paper_and_spread(table2_results: list[dict]) -> None:
    text = render_markdown(load_table_def("table2"), table2_results)
    assert "**97.13 ± 0.15**" in text and "**95.00" not in text
    assert "95.00 ± 0.20 (sd 1.00, n=3)" in text and "across-seed standard deviation" in text
    assert "*95.23 ± 0.17 (Δ −0.23)*" in text and "*96.63 ± 0.13 (Δ +0.50)*" in text
    assert "–†" in text and "–†: not run yet" in text
    assert "*Variational Information Bottleneck (additive)*" in text
    assert "Reported by their papers" not in text


def test_a_protocol_other_than_the_papers_is_named_and_gets_no_paper_difference() -> None:
    """Cells run 5-way for 8 iterations under the paper's column: the header names what ran, the paper's number
    stays without a difference, and a note lists every changed setting."""
    reduced = {"ways": 5, "iterations": 8}
    results = [make_result("table2", "maml", "omniglot_20w1s", 0, 40.0, preset="paper", protocol=reduced)]
    table_def = with_run_protocols(load_table_def("table2"), [
        {"protocol": results[0]["config"]["protocol"], "places": [{"table": "table2", "column": "omniglot_20w1s"}]}])
    text = render_markdown(table_def, results)
    assert "omniglot 5-way 1-shot 28x28 (for Omniglot 20-way 1-shot)" in text
    assert "*95.23 ± 0.17*" in text and "Δ −55.23" not in text
    assert "Not the paper's protocol" in text and "iterations 8 (paper 40000); ways 5 (paper 20)." in text
    latex = render_latex(table_def, results)
    assert "Not the paper's protocol" in latex and r"($\Delta$ $-$55.23)" not in latex


def test_latex_marks_best_missing_and_cited_block(table2_results: list[dict]) -> None:
    table2 = render_latex(load_table_def("table2"), table2_results)
    assert r"\textbf{97.13 $\pm$ 0.15}" in table2 and r"{\scriptsize (sd 1.00, n=3)}" in table2
    assert r"($\Delta$ $-$0.23)" in table2 and r"--$^\dagger$" in table2
    assert r"\toprule" in table2 and r"\bottomrule" in table2
    table1 = render_latex(load_table_def("table1"), [])
    assert r"\emph{Reported by their papers (not run here)}" in table1
    assert r"Matching Networks (Vinyals et al., 2016) & 93.8 & 98.7 & 43.56 $\pm$ 0.84" in table1
    assert r"MT-Net (Lee \& Choi, 2018) & 96.2 $\pm$ 0.4 & --$^\ddagger$" in table1


def test_latex_document_compiles(tmp_path: Path, table2_results: list[dict]) -> None:
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not on PATH (install texlive-latex-base and texlive-latex-recommended)")
    fragments = [render_latex(load_table_def(name), table2_results) for name in TABLES]
    (tmp_path / "tables.tex").write_text(latex_document(fragments), encoding="utf-8")
    proc = subprocess.run(["pdflatex", "-halt-on-error", "-interaction=nonstopmode", "tables.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 0


def test_write_tables_writes_md_and_tex(tmp_path: Path, table2_results: list[dict]) -> None:
    paths = write_tables(load_table_def("table2"), table2_results, tmp_path / "out")
    assert [p.name for p in paths] == ["table2.md", "table2.tex"]
    assert all(p.read_text(encoding="utf-8") for p in paths)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["table2.md", "table2.tex"]
