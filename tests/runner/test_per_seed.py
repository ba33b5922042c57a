"""The per-seed breakdown of a learning-curve table (python -m bench.runner.per_seed): every seed's paired
difference at every evaluated iteration, the count of seeds whose reference went down, files written."""
import json
from pathlib import Path

from bench.runner.per_seed import main as per_seed_main
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
    assert "| MAML (2 seeds) |" in (tmp_path / "tables" / "curves.md").read_text()   # the seeds behind each row
    markdown = (tmp_path / "tables" / "curves_per_seed.md").read_text()
    assert "of 2 seeds" in markdown and markdown in capsys.readouterr().out


def test_per_seed_without_results_is_one_line(tmp_path: Path, capsys) -> None:
    assert per_seed_main(["--results", str(tmp_path), "--preset", "smoke"]) == 2
    assert capsys.readouterr().err.startswith("error: no finished pair of meta_dropout and maml")
