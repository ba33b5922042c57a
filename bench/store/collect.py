"""Results as data: the cell records of a results folder as two tidy tables, one row per cell (finished or
failed) and one row per (finished cell, meta-test episode), as pandas DataFrames and as CSV files in tables/."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pandas as pd

from bench.store.cell_record import is_failure
from bench.store.results import ResultStore
from bench.util.atomic import atomic_path, write_text_atomic
from bench.util.errors import UserError

CELLS_CSV = "cells.csv"
EPISODES_CSV = "episodes.csv.gz"
FAILURE_FIELDS = ("kind", "stage", "reason", "iteration")          # a failure record's, as failure_<field>


def _records(results_dir: str | os.PathLike) -> list[dict]:
    """Every valid cell record of the folder, in cell-name order (damaged files are set aside, as everywhere); a
    missing folder or one without records is a UserError."""
    store = ResultStore(results_dir)
    if not store.root.is_dir():
        raise UserError(f"results folder {store.root} does not exist: give the folder of a run with --results")
    records = list(store.all_results().values())
    if not records:
        raise UserError(f"no cell records in {store.root / 'cells'}: give the results folder of a run (--results) "
                        "or run some cells first")
    return records


def _cell_value(value: object) -> object:
    """A setting as one CSV field: numbers, strings and booleans as they are, lists and mappings as JSON."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _place(record: dict) -> dict:
    """The first place the cell fills (table, row, column), and all of them as 'table/row/column;...'."""
    places = record["places"]
    first = places[0] if places else {"table": None, "row": None, "column": None}
    return {"table": first["table"], "row": first["row"], "column": first["column"],
            "places": ";".join(f"{p['table']}/{p['row']}/{p['column']}" for p in places)}


def _cell_row(record: dict) -> dict:
    config, failed = record["config"], is_failure(record)
    test = {} if failed else record["test"]
    return {"cell": record["name"], "status": record.get("status", "ok"), **_place(record),
            "learner": config["learner"], "regularizer": config["regularizer"], "seed": record["seed"],
            "preset": config.get("preset"), "mean": test.get("mean"), "ci95": test.get("ci95"),
            "n_episodes": test.get("n_episodes"),
            **{f"failure_{field}": record.get(field) if failed else None for field in FAILURE_FIELDS},
            "code_version": record.get("code_version"), "code_on_main": record.get("code_on_main"),
            "device": record.get("device"),
            **{f"protocol.{key}": _cell_value(value) for key, value in config["protocol"].items()},
            **{f"hyper.{key}": _cell_value(value) for key, value in sorted(config["hyper"].items())}}


def _episode_rows(record: dict) -> list[dict]:
    test, place = record["test"], _place(record)
    ids = (test.get("episodes") or {}).get("ids") or [None] * len(test["accuracies"])
    return [{"cell": record["name"], "table": place["table"], "row": place["row"], "column": place["column"],
             "learner": record["config"]["learner"], "regularizer": record["config"]["regularizer"],
             "seed": record["seed"], "episode": index, "episode_id": episode_id, "accuracy": accuracy}
            for index, (episode_id, accuracy) in enumerate(zip(ids, test["accuracies"]))]


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Integer columns with gaps (a failure has no n_episodes) as nullable integers, not floats."""
    for column in frame.columns:
        values = frame[column].dropna()
        if len(values) < len(frame[column]) and len(values) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in values):
            frame[column] = frame[column].astype("Int64")
    return frame


def _cells(records: list[dict]) -> pd.DataFrame:
    return _typed(pd.DataFrame([_cell_row(record) for record in records]))


def _episodes(records: list[dict]) -> pd.DataFrame:
    rows = [row for record in records if not is_failure(record) for row in _episode_rows(record)]
    return pd.DataFrame(rows, columns=["cell", "table", "row", "column", "learner", "regularizer", "seed", "episode",
                                       "episode_id", "accuracy"])


def cells_frame(results_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per cell record in results_dir/cells, finished (status ok) or failed, with its places, settings
    (protocol.*, hyper.*), seed, result (mean, ci95, n_episodes) or failure (failure_*) and provenance."""
    return _cells(_records(results_dir))


def episodes_frame(results_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per (finished cell, final meta-test episode): the cell, its first place, learner, regularizer, seed,
    the episode's index and id (equal ids: the same episode) and its accuracy in percent."""
    return _episodes(_records(results_dir))


def write_frames(results_dir: str | os.PathLike) -> dict[Path, int]:
    """Write tables/cells.csv and tables/episodes.csv.gz of the folder atomically; returns each path with its row
    count."""
    records = _records(results_dir)
    folder = Path(results_dir) / "tables"
    cells, episodes = _cells(records), _episodes(records)
    cells_path = write_text_atomic(folder / CELLS_CSV, cells.to_csv(index=False))
    episodes_path = folder / EPISODES_CSV
    with atomic_path(episodes_path) as tmp:
        tmp.write_bytes(gzip.compress(episodes.to_csv(index=False).encode(), mtime=0))
    return {cells_path: len(cells), episodes_path: len(episodes)}
