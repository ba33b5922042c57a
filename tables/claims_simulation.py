"""A perfect replication, simulated: per-episode accuracies drawn around the paper's own means for every cell the
claims compare, with K seeds, judged by the claims' own rules (`run_all.py --claims --simulate --seeds K`). Synthetic
by construction: it tells a user, before spending GPU-hours, which claims K seeds can settle.

Per cell (learner, regularizer, hyper-parameters, column) and seed, the cell's mean is the paper's plus a seed effect
N(0, seed spread); per episode, a difficulty shared by every cell of the column and seed (correlation
EPISODE_CORRELATION between two cells' accuracies on an episode) plus the cell's own noise, so that the total
episode spread is the paper's (its CI x sqrt(1000) / 1.96) or a measured cell's; accuracies on the grid
100 / (ways x queries), clipped to [0, 100]. A cell shared by several tables is one cell here too."""
from __future__ import annotations

import json
import math

import numpy as np

from bench.store.protocol import load_protocol
from tables.claims import DEFAULT_SEED_SD, EPISODE_CORRELATION, PAPER_EPISODES, ClaimResult, evaluate_claims, compared_claims
from tables.defs import load_table_def, row_columns
from tables.paper import paper_runs



def _cell_key(row: dict, column: str) -> str:
    return json.dumps([row["learner"], row["regularizer"], row.get("hyper", {}), column], sort_keys=True)


def measured_spreads(placed: dict[str, list[dict]]) -> dict[str, tuple[float, float]]:
    """{cell key: (episode spread, seed spread)} of finished cells: the std of a seed's per-episode accuracies
    (their mean over seeds) and, with 2+ seeds, the std of the seeds' means (NaN with one seed)."""
    by_cell: dict[str, list[dict]] = {}
    for table, results in placed.items():
        rows = {r["id"]: r for r in load_table_def(table)["rows"]}
        for result in results:
            if result.get("status", "ok") == "ok" and result.get("row") in rows:
                by_cell.setdefault(_cell_key(rows[result["row"]], result["column"]), {})[result["seed"]] = result
    out = {}
    for key, seeds in by_cell.items():
        accuracies = [np.asarray(r["test"]["accuracies"], dtype=float) for r in seeds.values()]
        means = [a.mean() for a in accuracies]
        out[key] = (float(np.mean([a.std() for a in accuracies])),
                    float(np.std(means, ddof=1)) if len(means) > 1 else math.nan)
    return out


def simulate(config: dict, seeds: int, placed: dict[str, list[dict]] | None = None,
             rng_seed: int = 0) -> dict[str, list[dict]]:
    """Placed results, per table, of a perfect replication with `seeds` seeds of every cell the claims compare that
    has a paper number (Figure 5 has none: its comparisons stay not run)."""
    rng = np.random.default_rng(rng_seed)
    spreads = measured_spreads(placed or {})
    difficulty: dict[tuple[str, int], np.ndarray] = {}
    cells: dict[tuple[str, int], np.ndarray] = {}
    out: dict[str, list[dict]] = {}
    for claim in compared_claims(config):
        table = claim["table"]
        table_def = load_table_def(table)
        rows = {r["id"]: r for r in table_def["rows"]}
        reported = paper_runs(table)
        for row_id in dict.fromkeys(claim["rows"] + claim["versus"]):
            row = rows[row_id]
            for column in claim.get("columns", row_columns(table_def, row)):
                paper = reported.get(row_id, {}).get(column)
                if paper is None or claim.get("metric", "accuracy") != "accuracy":
                    continue
                protocol = load_protocol(column, "paper", dict(row.get("protocol", {})), row["regularizer"],
                                         row["learner"])
                grid = 100.0 / (protocol.ways * (protocol.test_queries or protocol.queries))
                episode_sd, seed_sd = spreads.get(_cell_key(row, column), (math.nan, math.nan))
                if math.isnan(episode_sd):
                    episode_sd = (paper.ci or 0.0) * math.sqrt(PAPER_EPISODES) / 1.96
                seed_sd = DEFAULT_SEED_SD if math.isnan(seed_sd) else seed_sd
                for seed in range(seeds):
                    key = (_cell_key(row, column), seed)
                    if key not in cells:
                        shared = difficulty.setdefault((column, seed), rng.standard_normal(protocol.test_episodes))
                        own = rng.standard_normal(protocol.test_episodes)
                        noise = math.sqrt(EPISODE_CORRELATION) * shared + math.sqrt(1 - EPISODE_CORRELATION) * own
                        mean = paper.mean + seed_sd * rng.standard_normal()
                        cells[key] = np.clip(np.round((mean + episode_sd * noise) / grid) * grid, 0, 100)
                    out.setdefault(table, []).append(_record(table, row_id, column, seed, protocol.to_dict(),
                                                             cells[key]))
    return out


def _record(table: str, row: str, column: str, seed: int, protocol: dict, accuracies: np.ndarray) -> dict:
    values = [float(a) for a in accuracies]
    return {"table": table, "row": row, "column": column, "seed": seed, "status": "ok",
            "config": {"preset": "paper", "protocol": protocol},
            "test": {"accuracies": values, "mean": float(np.mean(values)), "n_episodes": len(values),
                     "ci95": 1.96 * float(np.std(values)) / math.sqrt(len(values)),
                     "episodes": {"fingerprint": f"simulated-{column}-seed{seed}"}}}


def simulated_claims(config: dict, seeds: int, placed: dict[str, list[dict]] | None = None,
                     rng_seed: int = 0) -> list[ClaimResult]:
    """The claims' verdicts on one simulated perfect replication with `seeds` seeds."""
    return evaluate_claims(config, simulate(config, seeds, placed, rng_seed))


def simulated_title(seeds: int) -> str:
    """The title of claims_simulated.md: what the table is and is not."""
    return (f"SIMULATED: the verdicts a perfect replication with {seeds} seed{'s' if seeds > 1 else ''} would get "
            "(synthetic by construction: per-episode accuracies drawn around the paper's numbers)")
