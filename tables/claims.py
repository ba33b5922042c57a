"""The paper's claims (configs/claims.yaml) tested on paired results: per comparison and per claim a verdict,
reproduced / contradicted / inconclusive / not run, with the episodes and seeds a run needs for 80% power."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from bench.util.errors import UserError
from bench.store.protocol import read_yaml
from tables.aggregate import results_by_cell
from tables.defs import attacks_of, load_table_def, row_columns
from tables.paired import Comparison, apply_holm, compare
from tables.paper import paper_runs
from tables.stats import ALPHA, POWER, required_n

CLAIMS = Path(__file__).resolve().parents[1] / "configs" / "claims.yaml"
EXPECTATIONS = ("greater", "less", "not_greater")
VERDICTS = ("reproduced", "contradicted", "inconclusive", "not run")
PAPER_DATASETS = ("omniglot", "mini_imagenet")


@dataclass
class Tested:
    """One comparison of a claim: its statistics, the paper's difference, verdict and the runs 80% power needs."""

    comparison: Comparison
    paper_diff: float
    verdict: str
    why: str
    episodes_needed: int | None
    seeds_needed: int | None


@dataclass
class ClaimResult:
    """A claim with its tested comparisons and overall verdict."""

    claim: dict
    tested: list[Tested]
    verdict: str


def load_claims(path: Path = CLAIMS) -> dict:
    """Read and check claims.yaml: every claim names known tables, rows and an expectation."""
    config = read_yaml(path)
    for index, claim in enumerate(config.get("claims", [])):
        where = f"{path}: claim {claim.get('id', index)!r}"
        missing = [k for k in ("id", "claim", "source", "table", "rows", "versus", "expect") if k not in claim]
        if missing:
            raise UserError(f"{where} lacks {', '.join(missing)}")
        if claim["expect"] not in EXPECTATIONS:
            raise UserError(f"{where}: expect must be one of {', '.join(EXPECTATIONS)}")
        ids = {row["id"] for row in load_table_def(claim["table"])["rows"]}
        unknown = [r for r in claim["rows"] + claim["versus"] if r not in ids]
        if unknown:
            raise UserError(f"{where}: rows {unknown} are not in table {claim['table']}")
    return config


def claim_tables(config: dict) -> list[str]:
    """The table definitions the claims need, in first-use order."""
    return list(dict.fromkeys(claim["table"] for claim in config.get("claims", [])))


def _metrics(table_def: dict, claim: dict, row: str, versus: str, column: str) -> list[tuple]:
    """Clean accuracy, or every attack (norm, size > 0) the figure's panels ask of both rows in the column."""
    if claim.get("metric", "accuracy") == "accuracy":
        return [()]
    theirs = attacks_of(table_def, versus, column)
    return [("fgsm", eps, norm) for norm, sizes in attacks_of(table_def, row, column).items()
            for eps in sizes if eps > 0 and eps in theirs.get(norm, [])]


def _paper_diff(table: str, row: str, versus: str, column: str, metric: tuple) -> float:
    runs = paper_runs(table)
    a, b = runs.get(row, {}).get(column), runs.get(versus, {}).get(column)
    return a.mean - b.mean if a and b and not metric else math.nan


def _comparisons(claim: dict, results: list[dict]) -> list[Comparison]:
    table_def = load_table_def(claim["table"])
    grouped = results_by_cell(table_def, results)
    rows = {row["id"]: row for row in table_def["rows"]}
    out = []
    for row in claim["rows"]:
        for versus in claim["versus"]:
            shared = [c for c in row_columns(table_def, rows[row]) if c in row_columns(table_def, rows[versus])]
            for column in claim.get("columns", shared):
                for metric in _metrics(table_def, claim, row, versus, column):
                    out.append(compare(claim["table"], row, versus, column, grouped.get((row, column), []),
                                       grouped.get((versus, column), []), metric))
    return out


def verdict(comparison: Comparison, expect: str, margin: float = 0.0, alpha: float = ALPHA) -> tuple[str, str]:
    """(verdict, reason) of one comparison under its Holm-adjusted primary p-value."""
    if comparison.status == "missing":
        return "not run", ""                         # the comparison's line names both rows
    if comparison.status == "unpaired":
        return "inconclusive", f"unpaired: {comparison.reason}"
    estimate, significant = comparison.primary, comparison.p_holm < alpha
    if expect == "not_greater":
        if significant and estimate.mean > 0:
            return "contradicted", "significantly better"
        if not math.isnan(estimate.high) and estimate.high < margin:
            return "reproduced", f"95% CI below {margin:g}"
        return "inconclusive", "CI reaches the margin"
    sign = 1 if expect == "greater" else -1
    if not significant:
        return "inconclusive", "not significant after Holm"
    return ("reproduced", "significant") if sign * estimate.mean > 0 else ("contradicted", "significant, opposite")


def needed(comparison: Comparison, paper_diff: float, expect: str, margin: float = 0.0,
           power: float = POWER, alpha: float = ALPHA) -> tuple[int | None, int | None]:
    """(test episodes per seed, seeds) for `power` to detect the paper's difference (for not_greater: to show
    the difference below the margin if the truth is the paper's difference), from the measured standard
    deviations of the paired differences; None where undefined (no paper number, wrong-signed or zero target,
    or fewer than two seeds for the across-seed deviation)."""
    target = {"greater": paper_diff, "less": -paper_diff, "not_greater": margin - paper_diff}[expect]
    if not comparison.ok or math.isnan(target) or target <= 0:
        return None, None
    return (required_n(target, comparison.sd_episode, power, alpha),
            required_n(target, comparison.sd_seed, power, alpha))


def _overall(verdicts: list[str]) -> str:
    if "contradicted" in verdicts:
        return "contradicted"
    if all(v == "not run" for v in verdicts):
        return "not run"
    return "reproduced" if all(v == "reproduced" for v in verdicts) else "inconclusive"


def evaluate_claims(config: dict, results: dict[str, list[dict]]) -> list[ClaimResult]:
    """Every claim's comparisons on the placed results of its table (Holm over all comparisons of all claims)."""
    alpha, power = float(config.get("alpha", ALPHA)), float(config.get("power", POWER))
    per_claim = [(claim, _comparisons(claim, results.get(claim["table"], []))) for claim in config["claims"]]
    apply_holm([c for _, comparisons in per_claim for c in comparisons])
    out = []
    for claim, comparisons in per_claim:
        margin = float(claim.get("margin", 0.0))
        tested = []
        for c in comparisons:
            paper = _paper_diff(claim["table"], c.row, c.versus, c.column, c.metric)
            result, why = verdict(c, claim["expect"], margin, alpha)
            if c.ok and not c.datasets <= set(PAPER_DATASETS):
                result, why = "inconclusive", "synthetic data ranks nothing"
            tested.append(Tested(c, paper, result, why, *needed(c, paper, claim["expect"], margin, power, alpha)))
        out.append(ClaimResult(claim, tested, _overall([t.verdict for t in tested])))
    return out
