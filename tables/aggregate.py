"""Aggregate per-seed result dicts into one record per (row, column) beside the paper's numbers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.data.pixels import PIXEL_UNITS
from bench.store.cell_record import is_failure
from tables.defs import paper_source, row_columns
from tables.paper import paper_runs

COLUMNS = ["row", "column", "n_seeds", "n_failed", "n_collapsed", "mean", "seed_std", "ci", "paper_mean", "paper_ci",
           "diff"]
CURVE_COLUMNS = ["row", "column", "norm", "epsilon", "n_seeds", "mean", "ci"]


def _by_cell(table_def: dict, records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    by_seed: dict[tuple[str, str], dict[int, dict]] = {}
    for record in records:
        if record.get("table") == table_def["name"]:
            by_seed.setdefault((record["row"], record["column"]), {})[record["seed"]] = record
    return {cell: list(seeds.values()) for cell, seeds in by_seed.items()}


def results_by_cell(table_def: dict, results: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """This table's finished results (failures left out) grouped by (row id, column id), one per seed (a
    repeated seed: the last wins)."""
    return _by_cell(table_def, [r for r in results if not is_failure(r)])


def failures_by_cell(table_def: dict, results: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """This table's recorded failures grouped by (row id, column id), one per seed."""
    return _by_cell(table_def, [r for r in results if is_failure(r)])


def _seed_std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else math.nan


def collapsed(result: dict) -> bool:
    """Whether a result's model predicted a single class for every query of every test episode."""
    test = result.get("test", {})
    single = test.get("single_class_episodes")
    return single is not None and single == test.get("n_episodes")


def aggregate(table_def: dict, results: list[dict]) -> pd.DataFrame:
    """One record per (row, column) of the definition: seeds, failed seeds, collapsed seeds (one class predicted
    everywhere), mean, across-seed std, episode CI, paper, diff. Failed seeds are counted, never averaged."""
    grouped, failed = results_by_cell(table_def, results), failures_by_cell(table_def, results)
    records = []
    for row in table_def["rows"]:
        paper_table, paper_row = paper_source(table_def, row)
        paper = paper_runs(paper_table).get(paper_row, {})
        for column in row_columns(table_def, row):
            seeds = grouped.get((row["id"], column), [])
            means = np.array([r["test"]["mean"] for r in seeds], dtype=float)
            cis = np.array([r["test"]["ci95"] for r in seeds], dtype=float)
            reported = paper.get(column)
            paper_mean = reported.mean if reported else math.nan
            paper_ci = reported.ci if reported and reported.ci is not None else math.nan
            records.append({"row": row["id"], "column": column, "n_seeds": len(seeds),
                            "n_failed": len(failed.get((row["id"], column), [])),
                            "n_collapsed": sum(map(collapsed, seeds)), "mean": _mean(means),
                            "seed_std": _seed_std(means), "ci": _mean(cis), "paper_mean": paper_mean,
                            "paper_ci": paper_ci, "diff": _mean(means) - paper_mean})
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def aggregate_robustness(fig_def: dict, results: list[dict]) -> pd.DataFrame:
    """Accuracy under attack per (row, column, norm, epsilon): seeds, mean over seeds, mean per-seed episode CI.
    Results from before attacks were in pixel units (no `units`) are left out: their sizes meant something else."""
    points = []
    for (row, column), seeds in results_by_cell(fig_def, results).items():
        for result in seeds:
            robustness = result.get("robustness") or {}
            if robustness.get("units") != PIXEL_UNITS:
                continue
            for norm, curve in robustness["norms"].items():
                points += [{"row": row, "column": column, "norm": norm, "epsilon": float(eps), "mean": float(m),
                            "ci": float(c)} for eps, m, c in zip(curve["epsilons"], curve["mean"], curve["ci95"])]
    if not points:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    grouped = pd.DataFrame(points).groupby(["row", "column", "norm", "epsilon"], sort=True)
    curves = grouped.agg(n_seeds=("mean", "size"), mean=("mean", "mean"), ci=("ci", "mean")).reset_index()
    return curves[CURVE_COLUMNS]
