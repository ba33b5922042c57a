"""Paired comparisons of a table's rows against their reference row (MAML; Meta-SGD for Meta-SGD rows) on the
shared meta-test episodes: pairing is checked by the episode fingerprints, never assumed."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bench.data.pixels import PIXEL_UNITS
from bench.util.errors import UserError
from tables.aggregate import results_by_cell
from tables.defs import row_columns
from tables.stats import Interval, holm, t_interval, wilcoxon_p, won_tied_lost

Metric = tuple       # () clean accuracy; ("fgsm", epsilon, norm): under attack (pixel units); ("iteration", n)


def reference_of(table_def: dict, row: dict) -> str | None:
    """The row a row is compared with: its `reference:` if given, else the plain row (regularizer none, no
    hyper-parameters) of the same learner, and for that plain row the plain MAML row; None for plain MAML."""
    if "reference" in row:
        ref = row["reference"]
        if ref is not None and ref not in {r["id"] for r in table_def["rows"]}:
            raise UserError(f"{table_def['name']}: row {row['id']!r} has reference {ref!r}, which is no row id")
        return ref if ref != row["id"] else None
    plain = {r["learner"]: r["id"] for r in reversed(table_def["rows"]) if (r["regularizer"], r["hyper"]) == ("none", {})}
    ref = plain.get(row["learner"])
    if ref == row["id"]:
        ref = plain.get("maml")
    return ref if ref != row["id"] else None


def measure(result: dict, metric: Metric) -> tuple[np.ndarray, str | None] | None:
    """(per-episode accuracies, episode fingerprint) of a result for a metric; None when the result lacks it."""
    fingerprint = (result.get("test", {}).get("episodes") or {}).get("fingerprint")
    if not metric:
        return np.asarray(result["test"]["accuracies"], dtype=float), fingerprint
    kind, value = metric[:2]
    if kind == "fgsm":
        robustness = result.get("robustness") or {}
        if robustness.get("units") != PIXEL_UNITS:           # attacked in other units (older results)
            return None
        curve = robustness["norms"].get(metric[2], {})
        for eps, accuracies in zip(curve.get("epsilons", []), curve.get("accuracies", [])):
            if math.isclose(float(eps), float(value)):
                return np.asarray(accuracies, dtype=float), fingerprint
        return None
    if kind == "iteration":                 # a learning-curve point; a cell without a curve has its final one
        for point in result.get("test_curve") or []:
            if point["iteration"] == value:
                return np.asarray(point["accuracies"], dtype=float), (point.get("episodes") or {}).get("fingerprint")
        if not result.get("test_curve") and result.get("config", {}).get("protocol", {}).get("iterations") == value:
            return np.asarray(result["test"]["accuracies"], dtype=float), fingerprint
        return None
    raise ValueError(f"unknown metric {metric!r}")


@dataclass
class Comparison:
    """One row against another in one column (and metric): its paired statistics, or why there are none."""

    table: str
    row: str
    versus: str
    column: str
    metric: Metric = ()
    status: str = "missing"            # "ok", "missing" (a side has no result) or "unpaired" (episodes differ)
    reason: str = ""
    seeds: list[int] = field(default_factory=list)
    n_episodes: int = 0                # paired episodes over all seeds
    episodes: Interval | None = None   # mean difference and t-interval over all paired episodes
    wilcoxon: float = math.nan         # Wilcoxon signed-rank p over all paired episodes
    won_tied_lost: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    across_seeds: Interval | None = None   # mean of the per-seed mean differences, t-interval over seeds (k >= 2)
    sd_episode: float = math.nan       # within-seed std of the per-episode differences (pooled over seeds)
    sd_seed: float = math.nan          # std of the per-seed mean differences (k >= 2)
    p_holm: float = math.nan           # the primary p adjusted by Holm within its family
    datasets: set[str] = field(default_factory=set)   # the datasets the compared cells ran on

    @property
    def ok(self) -> bool:
        """Whether paired statistics exist."""
        return self.status == "ok"

    @property
    def basis(self) -> str:
        """What the primary estimate rests on: 'seeds' (t over k >= 2 seeds) or 'episodes' (one seed)."""
        return "seeds" if self.across_seeds is not None else "episodes"

    @property
    def primary(self) -> Interval | None:
        """The estimate a verdict uses: across seeds when there are several, else over the episodes."""
        return self.across_seeds if self.across_seeds is not None else self.episodes

    @property
    def p(self) -> float:
        """The primary p-value: the t-test over seeds (k >= 2), else the Wilcoxon signed-rank test."""
        return self.across_seeds.p if self.across_seeds is not None else self.wilcoxon


def compare(table: str, row: str, versus: str, column: str, row_seeds: list[dict], versus_seeds: list[dict],
            metric: Metric = ()) -> Comparison:
    """Pair the seeds both sides have; per seed, the episodes must carry the same fingerprint."""
    out = Comparison(table, row, versus, column, metric)
    out.datasets = {r.get("config", {}).get("protocol", {}).get("dataset") for r in row_seeds + versus_seeds}
    mine = {r["seed"]: measure(r, metric) for r in row_seeds}
    theirs = {r["seed"]: measure(r, metric) for r in versus_seeds}
    seeds = sorted(s for s in set(mine) & set(theirs) if mine[s] is not None and theirs[s] is not None)
    if not seeds:
        absent = [name for name, side in ((row, mine), (versus, theirs)) if all(v is None for v in side.values())]
        out.reason = f"no result for {' and '.join(absent)}" if absent else "no seed in common"
        return out
    differences = []
    for seed in seeds:
        (a, fa), (b, fb) = mine[seed], theirs[seed]
        if fa is None or fb is None or fa != fb or len(a) != len(b):
            out.status = "unpaired"
            out.reason = (f"seed {seed}: " + ("a result has no episode fingerprint (run before shared episodes)"
                                               if fa is None or fb is None else "different test episodes"))
            return out
        differences.append(a - b)
    pooled = np.concatenate(differences)
    out.status, out.seeds, out.n_episodes = "ok", seeds, len(pooled)
    out.episodes = t_interval(pooled)
    out.wilcoxon = wilcoxon_p(pooled)
    out.won_tied_lost = won_tied_lost(pooled)
    out.sd_episode = math.sqrt(float(np.mean([np.var(d, ddof=1) if len(d) > 1 else 0.0 for d in differences])))
    if len(seeds) >= 2:
        per_seed = np.array([d.mean() for d in differences])
        out.across_seeds = t_interval(per_seed)
        out.sd_seed = float(per_seed.std(ddof=1))
    return out


def apply_holm(comparisons: list[Comparison]) -> None:
    """Adjust the primary p-values of the paired comparisons as one Holm family (in place)."""
    adjusted = holm([c.p if c.ok else math.nan for c in comparisons])
    for comparison, p in zip(comparisons, adjusted):
        comparison.p_holm = p


def reference_pairs(table_def: dict) -> list[tuple[str, str, str]]:
    """(row, its reference, column) for every row with a reference and every column both are run in."""
    rows = {r["id"]: r for r in table_def["rows"]}
    out = []
    for row in table_def["rows"]:
        ref = reference_of(table_def, row)
        if ref is not None:
            out += [(row["id"], ref, c) for c in row_columns(table_def, row) if c in row_columns(table_def, rows[ref])]
    return out


def table_comparisons(table_def: dict, results: list[dict]) -> list[Comparison]:
    """Every row against its reference in every column they share, Holm-adjusted within the table."""
    grouped = results_by_cell(table_def, results)
    out = [compare(table_def["name"], row, ref, column, grouped.get((row, column), []), grouped.get((ref, column), []))
           for row, ref, column in reference_pairs(table_def)]
    apply_holm(out)
    return out
