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
from tables.stats import Interval, holm, on_grid, t_interval, wilcoxon_p, won_tied_lost

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


class InvalidMeasure(ValueError):
    """Per-episode accuracies that cannot be a meta-test's (a damaged curve point, a count that does not match)."""


def _checked(accuracies: object, expected: int | None, where: str) -> np.ndarray:
    """The accuracies as an array, checked as the final test's are: a non-empty list of percentages, as many as
    the protocol's test episodes when known."""
    if not isinstance(accuracies, list) or not accuracies or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) and 0 <= a <= 100 for a in accuracies):
        raise InvalidMeasure(f"{where}: the accuracies are not a list of percentages")
    if expected is not None and len(accuracies) != expected:
        raise InvalidMeasure(f"{where}: {len(accuracies)} accuracies for {expected} test episodes")
    return np.asarray(accuracies, dtype=float)


def measure(result: dict, metric: Metric) -> tuple[np.ndarray, dict] | None:
    """(per-episode accuracies, the episodes' description: fingerprint and ids) of a result for a metric; None
    when the result lacks it; InvalidMeasure when what it holds cannot be a meta-test's."""
    episodes = result.get("test", {}).get("episodes") or {}
    expected = result.get("config", {}).get("protocol", {}).get("test_episodes")
    if not metric:
        return _checked(result["test"]["accuracies"], expected, "the final test"), episodes
    kind, value = metric[:2]
    if kind == "fgsm":
        robustness = result.get("robustness") or {}
        if robustness.get("units") != PIXEL_UNITS:           # attacked in other units (older results)
            return None
        curve = robustness["norms"].get(metric[2], {})
        for eps, accuracies in zip(curve.get("epsilons", []), curve.get("accuracies", [])):
            if math.isclose(float(eps), float(value)):
                return _checked(accuracies, expected, f"the {metric[2]} attack of size {eps}"), episodes
        return None
    if kind == "iteration":                 # a learning-curve point; a cell without a curve has its final one
        for point in result.get("test_curve") or []:
            if isinstance(point, dict) and point.get("iteration") == value:
                return (_checked(point.get("accuracies"), expected, f"the point at iteration {value}"),
                        point.get("episodes") or {})
        if not result.get("test_curve") and result.get("config", {}).get("protocol", {}).get("iterations") == value:
            return _checked(result["test"]["accuracies"], expected, "the final test"), episodes
        return None
    raise ValueError(f"unknown metric {metric!r}")


def accuracy_grid(records: list[dict]) -> float | None:
    """The step between a test episode's possible accuracies, 100 / (ways x test queries), of the records'
    protocol (None when they do not say)."""
    for record in records:
        protocol = record.get("config", {}).get("protocol", {})
        queries = protocol.get("test_queries") or protocol.get("queries")
        if protocol.get("ways") and queries:
            return 100.0 / (protocol["ways"] * queries)
    return None


def _paired(a: np.ndarray, ea: dict, b: np.ndarray, eb: dict) -> tuple[np.ndarray, np.ndarray] | str:
    """The two sides' accuracies on the same episodes, in one order, or why they are not paired. With per-episode
    ids on both sides the episodes are matched by id (the same set, each once); else the fingerprints must agree."""
    ids_a, ids_b = ea.get("ids"), eb.get("ids")
    if ids_a is not None and ids_b is not None:
        if len(ids_a) != len(a) or len(ids_b) != len(b) or len(set(ids_a)) != len(ids_a):
            return "the episode ids do not match the accuracies"
        if sorted(ids_a) != sorted(ids_b):
            return "different test episodes"
        position = {episode: i for i, episode in enumerate(ids_b)}
        return a, b[[position[episode] for episode in ids_a]]
    fa, fb = ea.get("fingerprint"), eb.get("fingerprint")
    if fa is None or fb is None:
        return "a result has no episode fingerprint (run before shared episodes)"
    if fa != fb or len(a) != len(b):
        return "different test episodes"
    return a, b


@dataclass
class Comparison:
    """One row against another in one column (and metric): its paired statistics, or why there are none."""

    table: str
    row: str
    versus: str
    column: str
    metric: Metric = ()
    status: str = "missing"            # "ok", "missing" (a side has no result), "unpaired" (episodes differ) or
    #                                    "invalid" (damaged accuracies, or every seed's difference the same)
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
    protocols: list[dict] = field(default_factory=list)   # {"row", "preset", "protocol"} of every compared cell
    off_protocol: list[str] = field(default_factory=list)  # how they differ from the paper's protocol

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
    """Pair the seeds both sides have; per seed, the episodes must be the same (matched by id, or by
    fingerprint); differences are taken on the accuracy grid."""
    out = Comparison(table, row, versus, column, metric)
    everything = row_seeds + versus_seeds
    out.datasets = {r.get("config", {}).get("protocol", {}).get("dataset") for r in everything}
    out.protocols = [{"row": name, "preset": r.get("config", {}).get("preset"),
                      "protocol": r.get("config", {}).get("protocol", {})}
                     for name, side in ((row, row_seeds), (versus, versus_seeds)) for r in side]
    try:
        mine = {r["seed"]: measure(r, metric) for r in row_seeds}
        theirs = {r["seed"]: measure(r, metric) for r in versus_seeds}
    except InvalidMeasure as err:
        out.status, out.reason = "invalid", str(err)
        return out
    seeds = sorted(s for s in set(mine) & set(theirs) if mine[s] is not None and theirs[s] is not None)
    if not seeds:
        absent = [name for name, side in ((row, mine), (versus, theirs)) if all(v is None for v in side.values())]
        out.reason = f"no result for {' and '.join(absent)}" if absent else "no seed in common"
        return out
    grid = accuracy_grid(everything)
    differences = []
    for seed in seeds:
        paired = _paired(*mine[seed], *theirs[seed])
        if isinstance(paired, str):
            out.status, out.reason = "unpaired", f"seed {seed}: {paired}"
            return out
        a, b = paired
        differences.append(a - b)
    pooled = np.concatenate(differences)
    out.status, out.seeds, out.n_episodes = "ok", seeds, len(pooled)
    out.episodes = t_interval(pooled)
    out.wilcoxon = wilcoxon_p(on_grid(pooled, grid))          # ranks: equal on the grid means tied
    out.won_tied_lost = won_tied_lost(on_grid(pooled, grid))
    out.sd_episode = math.sqrt(float(np.mean([np.var(d, ddof=1) if len(d) > 1 else 0.0 for d in differences])))
    if len(seeds) >= 2:
        per_seed = np.array([d.mean() for d in differences])
        if np.ptp(per_seed) == 0:               # the seeds are kept (they ran); their test is what is invalid
            out.status = "invalid"
            out.reason = (f"every seed's mean difference is {per_seed[0]:+.2f}: a duplicated seed? (a test over seeds "
                          "needs independent runs)")
            return out
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
