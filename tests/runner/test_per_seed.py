"""The per-seed breakdown of a learning-curve table (python -m bench.runner.per_seed): every seed's paired
difference at every evaluated iteration, the count of seeds whose reference went down, files written."""
import json
from pathlib import Path

from bench.runner.per_seed import drops, main as per_seed_main
from bench.store.cell_record import check_record
from run_all import main


def test_per_seed_breakdown_of_two_smoke_seeds(tmp_path: Path, capsys) -> None:
    assert main(["--table", "curves", "--preset", "smoke", "--seeds", "2", "--only", "m*[lt]",
                 "--results", str(tmp_path)]) == 0
    capsys.readouterr()
    assert per_seed_main(["--results", str(tmp_path), "--preset", "smoke", "--drop-between", "4", "8"]) == 0
    written = json.loads((tmp_path / "tables" / "curves_per_seed.json").read_text())
    entries = written["entries"]
    assert sorted({(e["seed"], e["iteration"]) for e in entries}) == [(s, i) for s in (0, 1) for i in (2, 4, 8)]
    for e in entries:
        assert e["status"] == "ok" and e["low"] <= e["diff"] <= e["high"] and e["episodes"] == 20
        assert abs(sum(e["won_tied_lost_pct"]) - 100) < 1e-6
    assert [d["down"] for d in written["drops"]] == [d["after"] < d["before"] for d in written["drops"]]
    assert [d["seed"] for d in written["drops"]] == [0, 1]
    assert "| MAML (2 seeds) |" in (tmp_path / "tables" / "curves.md").read_text()   # the seeds behind each row
    markdown = (tmp_path / "tables" / "curves_per_seed.md").read_text()
    assert "of 2 seeds" in markdown and markdown in capsys.readouterr().out


def test_per_seed_without_results_is_one_line(tmp_path: Path, capsys) -> None:
    assert per_seed_main(["--results", str(tmp_path), "--preset", "smoke"]) == 2
    assert capsys.readouterr().err.startswith("error: no finished pair of meta_dropout and maml")


def test_the_reference_drop_counts_every_seed_of_the_reference_paired_or_not() -> None:
    def record(row: str, seed: int, at: dict[int, float]) -> dict:
        return {"table": "curves", "row": row, "column": "omniglot_20w1s", "seed": seed, "status": "ok",
                "test_curve": [{"iteration": i, "mean": m} for i, m in at.items()]}
    results = [record("maml", 0, {2000: 88.0, 4000: 86.0}), record("maml", 1, {2000: 85.0, 4000: 87.0}),
               record("maml", 2, {2000: 86.0, 4000: 86.0}), record("meta_dropout", 0, {2000: 80.0, 4000: 90.0})]
    went = drops(results, "curves", "maml", "omniglot_20w1s", 2000, 4000)
    assert [(d["seed"], d["down"]) for d in went] == [(0, True), (1, False), (2, False)]


def test_the_committed_study_records_are_valid_and_on_one_commit_of_main() -> None:
    cells = sorted((Path(__file__).resolve().parents[2] / "results" / "cpu_study_seeds" / "cells").glob("*.json"))
    records = [check_record(json.loads(path.read_text()), path.stem) for path in cells]
    assert {r["code_version"] for r in records} == {"cde28915e11bcd337bca13bc3087e6665f2f0dc1"}
    assert all(r["code_on_main"] and r["config"]["preset"] == "cpu_study" for r in records)
    assert sorted((r["config"]["regularizer"], r["seed"]) for r in records) == sorted(   # the ten registered cells
        (regularizer, seed) for regularizer in ("none", "meta_dropout") for seed in range(5))
    assert all([p["iteration"] for p in r["test_curve"]] == [500, 1000, 2000, 4000] for r in records)
