"""Results as data: run_all.py --collect writes tables/cells.csv (one row per cell record) and
tables/episodes.csv.gz (one row per meta-test episode), the frames bench.api.cells_frame / episodes_frame return."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.api import cells_frame, episodes_frame
from bench.store.results import ResultStore
from bench.util.notice import RepairWarning
from run_all import main

SMOKE = ["--table", "1", "--preset", "smoke", "--device", "cpu", "--jobs", "1", "--set", "iterations=4",
         "--set", "checkpoint_every=4"]
TEXT = {"episode_id": str, "code_version": str}        # hexadecimal ids can look like numbers


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder with the MAML row of Table 1 finished (smoke) and one diverged cell, collected."""
    root = tmp_path_factory.mktemp("collected")
    assert main(SMOKE + ["--only", "maml", "--results", str(root)]) == 0
    assert main(SMOKE + ["--only", "omniglot_20w1s__maml__none__*", "--set", "inner_lr=1e30",
                         "--results", str(root)]) == 1
    assert main(["--collect", "--results", str(root)]) == 0
    return root


def _records(root: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (root / "cells").glob("*.json")}


def test_one_row_per_cell_with_its_numbers(collected: Path) -> None:
    records = _records(collected)
    cells = pd.read_csv(collected / "tables" / "cells.csv", dtype=TEXT)
    assert sorted(cells["cell"]) == sorted(records) and len(records) == 5
    finished = cells[cells["status"] == "ok"].set_index("cell")
    assert len(finished) == 4 and set(finished["row"]) == {"maml"} and set(finished["table"]) == {"table1"}
    for name, row in finished.iterrows():
        test = records[name]["test"]
        assert (row["mean"], row["ci95"], row["n_episodes"]) == (test["mean"], test["ci95"], test["n_episodes"])
        assert row["protocol.ways"] == records[name]["config"]["protocol"]["ways"] and row["seed"] == 0
        assert row["places"] == f"table1/maml/{row['column']}" and row["code_version"] == records[name]["code_version"]
    assert cells["protocol.ways"].dtype.kind == "i" and cells["mean"].dtype.kind == "f"
    (failed,) = (row for _, row in cells[cells["status"] == "failed"].iterrows())
    assert failed["failure_kind"] == "non_finite" and failed["failure_stage"] in ("train", "test")
    assert pd.isna(failed["mean"]) and failed["failure_iteration"] == 4
    assert "not finite" in failed["failure_reason"] and failed["protocol.inner_lr"] == 1e30


def test_one_row_per_episode(collected: Path) -> None:
    records = _records(collected)
    episodes = pd.read_csv(collected / "tables" / "episodes.csv.gz", dtype=TEXT)
    finished = {name: r for name, r in records.items() if r["status"] == "ok"}
    assert episodes.groupby("cell").size().to_dict() == {name: r["test"]["n_episodes"] for name, r in finished.items()}
    for name, rows in episodes.groupby("cell"):
        test = finished[name]["test"]
        assert rows["accuracy"].tolist() == test["accuracies"] and rows["episode"].tolist() == list(range(len(rows)))
        assert rows["episode_id"].tolist() == test["episodes"]["ids"]
    assert episodes["accuracy"].dtype.kind == "f" and episodes["seed"].dtype.kind == "i"


def test_the_functions_return_the_written_tables(collected: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_csv(collected / "tables" / "episodes.csv.gz", dtype=TEXT),
                                  episodes_frame(collected))
    written = pd.read_csv(collected / "tables" / "cells.csv", dtype=TEXT)
    pd.testing.assert_frame_equal(written, cells_frame(collected).astype(written.dtypes.to_dict()))


def test_collect_prints_the_files_and_their_rows(collected: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    root = Path(shutil.copytree(collected, tmp_path / "results"))
    (root / "cells" / "damaged.json").write_text("{")
    with pytest.warns(RepairWarning, match="damaged.json is not a valid cell record"):
        assert main(["--collect", "--results", str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{root / 'tables' / 'cells.csv'}: 5 rows",
                                                    f"{root / 'tables' / 'episodes.csv.gz'}: 80 rows"]
    assert (root / "cells" / ".invalid" / "damaged.json").exists()
    assert ResultStore(root).all_results().keys() == _records(root).keys()


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_collect_without_records_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, folder: str) -> None:
    root = tmp_path / folder
    if folder == "empty":
        (root / "cells").mkdir(parents=True)
    assert main(["--collect", "--results", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and "--results" in err, err
    assert not (root / "tables").exists()
