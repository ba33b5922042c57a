"""The paper's claims (configs/claims.yaml) tested on paired results, by decision rules a perfect replication
passes (docs/claims.md):

- A claim is judged on the comparisons the paper's own numbers support; comparisons where the paper's difference
  disagrees with its sentence are listed with that difference and left out of the verdict.
- A claim about a method needs two seeds or more: with one seed no claim reads reproduced or contradicted.
- Reproduced: every remaining comparison significant in the claimed direction at alpha over seeds (an
  intersection-union test: no multiplicity correction); for a "does not outperform" claim, the upper 95% bound
  below the declared margin. Contradicted: some comparison significant in the opposite direction after Holm within
  the claim. Otherwise inconclusive.
- Power: the seeds at which a replication whose true differences are the paper's reads "reproduced" with 80%
  probability (the product of the comparisons' powers), from the measured seed spread or a stated default.
- A verdict from a protocol other than the paper's says so."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from scipy import stats

from bench.store.protocol import read_yaml
from bench.util.errors import UserError
from tables.aggregate import results_by_cell
from tables.defs import attacks_of, load_table_def, row_columns
from tables.paired import Comparison, compare
from tables.paper import paper_runs
from tables.run_protocols import describe_changes, off_protocol
from tables.stats import ALPHA, POWER, holm, required_n

CLAIMS = Path(__file__).resolve().parents[1] / "configs" / "claims.yaml"
EXPECTATIONS = ("greater", "less", "not_greater")
PAPER_DATASETS = ("omniglot", "mini_imagenet")
MIN_SEEDS = 2                  # a claim about a method needs at least this many seeds
MAX_SEEDS = 200                # the power search stops here
# The spread a replication shows where it is not measured yet: the standard deviation of a cell's mean over seeds
# (training runs, points of accuracy), and the correlation of two cells' accuracies on the same test episode (their
# shared difficulty); a cell's episode spread is the paper's CI x sqrt(1000) / 1.96.
DEFAULT_SEED_SD = 0.3
EPISODE_CORRELATION = 0.5
PAPER_EPISODES = 1000
ONE_SEED = "one seed: evidence about these trained models, not the method"


@dataclass
class Tested:
    """One comparison of a claim: its statistics, the paper's difference and whether the paper supports it, its
    outcome under the claim's rule and the within-claim Holm p of the opposite direction."""

    comparison: Comparison
    paper_diff: float
    supported: bool
    outcome: str = ""            # "claimed", "opposite", "not significant", or why there is no test
    p_opposite: float = math.nan
    episodes_needed: int | None = None

    @property
    def row(self) -> str:
        return self.comparison.row


@dataclass
class ClaimResult:
    """A claim's comparisons (kept and left out), its verdict and why, the power of its rule, the protocol note."""

    claim: dict
    tested: list[Tested]
    verdict: str                 # reproduced | contradicted | inconclusive | one seed | not run | qualitative
    why: str = ""
    seeds: int = 0               # the seeds every kept comparison has
    seeds_needed: int | None = None
    power_now: float = math.nan  # the chance of "reproduced" at `seeds`, if the paper's differences are true
    power_basis: str = ""        # where the seed spread comes from
    reduced: list[tuple] = field(default_factory=list)   # (preset, setting, run, paper) where not the paper's

    @property
    def kept(self) -> list[Tested]:
        return [t for t in self.tested if t.supported]

    @property
    def disagree(self) -> list[Tested]:
        return [t for t in self.tested if not t.supported]

    @property
    def label(self) -> str:
        """The verdict as printed: marked when the runs did not follow the paper's protocol."""
        if self.reduced and self.verdict in ("reproduced", "contradicted", "inconclusive", "one seed"):
            lines = describe_changes(self.reduced)
            short = "; ".join(lines) if len(self.reduced) <= 4 else (
                f"{len({c[1] for c in self.reduced})} settings, e.g. " + "; ".join(lines)[:80].rsplit(";", 1)[0])
            return f"{self.verdict} at reduced protocol ({short})"
        return self.verdict


def load_claims(path: Path = CLAIMS) -> dict:
    """Read and check claims.yaml: every tested claim names known tables, rows and an expectation; a
    "does not outperform" claim declares its margin and the reason for it."""
    config = read_yaml(path)
    for index, claim in enumerate(config.get("claims", [])):
        where = f"{path}: claim {claim.get('id', index)!r}"
        if claim.get("qualitative"):
            missing = [k for k in ("id", "claim", "source", "why_untested") if k not in claim]
            if missing:
                raise UserError(f"{where} lacks {', '.join(missing)}")
            continue
        missing = [k for k in ("id", "claim", "source", "table", "rows", "versus", "expect") if k not in claim]
        if missing:
            raise UserError(f"{where} lacks {', '.join(missing)}")
        if claim["expect"] not in EXPECTATIONS:
            raise UserError(f"{where}: expect must be one of {', '.join(EXPECTATIONS)}")
        if claim["expect"] == "not_greater" and not {"margin", "margin_reason"} <= set(claim):
            raise UserError(f"{where}: a not_greater claim needs a margin (points) and a margin_reason")
        ids = {row["id"] for row in load_table_def(claim["table"])["rows"]}
        unknown = [r for r in claim["rows"] + claim["versus"] if r not in ids]
        if unknown:
            raise UserError(f"{where}: rows {unknown} are not in table {claim['table']}")
    return config


def compared_claims(config: dict) -> list[dict]:
    """The claims that compare rows (not the qualitative ones)."""
    return [c for c in config.get("claims", []) if not c.get("qualitative")]


def select_claims(config: dict, ids: str = "all", columns: set[str] | None = None) -> dict:
    """The config with only the claims `ids` names ("all", or ids separated by commas) and, given `columns`, each
    tested claim narrowed to those of its columns (a claim left with none is dropped)."""
    known = [claim["id"] for claim in config["claims"]]
    wanted = known if ids == "all" else [i.strip() for i in ids.split(",") if i.strip()]
    unknown = [i for i in wanted if i not in known]
    if unknown or not wanted:
        raise UserError(f"--claims {ids}: unknown claim {', '.join(map(repr, unknown))}; the claims are "
                        f"{', '.join(known)} (or give --claims alone for all)")
    selected = []
    for claim in config["claims"]:
        if claim["id"] not in wanted:
            continue
        if columns is not None and not claim.get("qualitative"):
            table_def = load_table_def(claim["table"])
            narrowed = [c for c in claim.get("columns", table_def["columns"]) if c in columns]
            if not narrowed:
                continue
            claim = {**claim, "columns": narrowed, "narrowed": True}
        elif columns is not None:
            continue
        selected.append(claim)
    return {**config, "claims": selected}


def claim_tables(config: dict) -> list[str]:
    """The table definitions the claims need, in first-use order."""
    return list(dict.fromkeys(claim["table"] for claim in compared_claims(config)))


def _metrics(table_def: dict, claim: dict, row: str, versus: str, column: str) -> list[tuple]:
    """Clean accuracy, or every attack (norm, size > 0) of the claim's norms that the figure's panels ask of both
    rows in the column."""
    if claim.get("metric", "accuracy") == "accuracy":
        return [()]
    theirs = attacks_of(table_def, versus, column)
    norms = claim.get("norms")
    return [("fgsm", eps, norm) for norm, sizes in attacks_of(table_def, row, column).items()
            if norms is None or norm in norms for eps in sizes if eps > 0 and eps in theirs.get(norm, [])]


def paper_diff(table: str, row: str, versus: str, column: str, metric: tuple = ()) -> float:
    """The difference of the paper's reported means, row - versus (NaN where the paper gives none)."""
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


def target(expect: str, paper: float, margin: float) -> float:
    """How far, in the claimed direction, the paper's difference lies from what the rule must exclude: the paper's
    difference (greater), its negative (less), the margin minus it (not_greater); NaN without a paper number."""
    return {"greater": paper, "less": -paper, "not_greater": margin - paper}[expect]


def supported(expect: str, paper: float, margin: float) -> bool:
    """Whether the paper's own numbers agree with its sentence (no paper number: nothing disagrees)."""
    return math.isnan(paper) or target(expect, paper, margin) > 0


def _outcome(c: Comparison, expect: str, margin: float, alpha: float) -> str:
    """'claimed' when the comparison passes the claim's rule over seeds, else 'not significant' (its opposite
    test is Holm-adjusted within the claim afterwards)."""
    estimate = c.across_seeds
    if expect == "not_greater":
        return "claimed" if not math.isnan(estimate.high) and estimate.high < margin else "not significant"
    sign = 1 if expect == "greater" else -1
    return "claimed" if estimate.p < alpha and sign * estimate.mean > 0 else "not significant"


def _p_opposite(c: Comparison, expect: str, margin: float) -> float:
    """The two-sided p of the test whose rejection in the wrong direction contradicts the claim (NaN when the
    estimate lies on the claimed side): mean = 0 for greater / less, mean = margin for not_greater."""
    estimate = c.across_seeds
    if expect == "not_greater":
        if estimate.mean <= margin or math.isnan(estimate.high):
            return math.nan
        se = (estimate.high - estimate.low) / 2 / stats.t.ppf(1 - ALPHA / 2, len(c.seeds) - 1)
        return float(2 * stats.t.sf((estimate.mean - margin) / se, len(c.seeds) - 1)) if se > 0 else math.nan
    sign = 1 if expect == "greater" else -1
    return estimate.p if sign * estimate.mean < 0 else math.nan


def significance_power(delta: float, sd: float, seeds: int, alpha: float = ALPHA) -> float:
    """The chance that the t-test over `seeds` per-seed differences of true mean delta > 0 and spread sd reads
    significant at alpha on the positive side (two-sided test; noncentral t)."""
    if seeds < 2 or not (delta > 0 and sd > 0):
        return 0.0
    df, nc = seeds - 1, delta * math.sqrt(seeds) / sd
    return float(stats.nct.sf(stats.t.ppf(1 - alpha / 2, df), df, nc))


def paper_episode_sd(table: str, row: str, versus: str, column: str) -> float:
    """The spread of a paired per-episode difference implied by the paper's CIs of the two cells (each over 1000
    episodes) and EPISODE_CORRELATION; NaN without both CIs."""
    runs = paper_runs(table)
    a, b = runs.get(row, {}).get(column), runs.get(versus, {}).get(column)
    if not (a and b and a.ci and b.ci):
        return math.nan
    sa, sb = (x.ci * math.sqrt(PAPER_EPISODES) / 1.96 for x in (a, b))
    return math.sqrt(sa ** 2 + sb ** 2 - 2 * EPISODE_CORRELATION * sa * sb)


def seed_spread(c: Comparison, episodes: int = PAPER_EPISODES) -> tuple[float, str]:
    """The standard deviation of a comparison's per-seed mean difference: measured over 2+ seeds, else the stated
    default (two cells' seed spreads and the sampling of `episodes` paired differences, their spread measured or
    implied by the paper's CIs)."""
    if c.ok and not math.isnan(c.sd_seed) and c.sd_seed > 0:
        return c.sd_seed, "measured"
    episode_sd = c.sd_episode if c.ok and not math.isnan(c.sd_episode) else paper_episode_sd(
        c.table, c.row, c.versus, c.column)
    episode_part = 0.0 if math.isnan(episode_sd) else episode_sd ** 2 / max(1, episodes)
    return math.sqrt(2 * DEFAULT_SEED_SD ** 2 + episode_part), "default"


def claim_power(kept: list[Tested], expect: str, margin: float, seeds: int, alpha: float = ALPHA,
                power: float = POWER, episodes: int = PAPER_EPISODES) -> tuple[int | None, float, str]:
    """(seeds for a `power` chance that the claim reads reproduced, that chance at `seeds`, basis) if the true
    differences are the paper's: the product of the kept comparisons' powers (the comparisons taken as
    independent). None when a kept comparison has no paper number or the search exceeds MAX_SEEDS."""
    if not kept or any(math.isnan(t.paper_diff) for t in kept):
        return None, math.nan, "no paper number for every comparison"
    spreads = [seed_spread(t.comparison, episodes) for t in kept]
    basis = "measured seed spread" if all(b == "measured" for _, b in spreads) else (
        f"default seed spread ({DEFAULT_SEED_SD:g} points per cell)")

    def chance(k: int) -> float:
        return math.prod(significance_power(target(expect, t.paper_diff, margin), sd, k, alpha)
                         for t, (sd, _) in zip(kept, spreads))
    needed = next((k for k in range(MIN_SEEDS, MAX_SEEDS + 1) if chance(k) >= power), None)
    return needed, chance(seeds), basis


def _judge(claim: dict, comparisons: list[Comparison], alpha: float, power: float) -> ClaimResult:
    margin = float(claim.get("margin", 0.0))
    expect = claim["expect"]
    tested = [Tested(c, p, supported(expect, p, margin)) for c in comparisons
              for p in [paper_diff(claim["table"], c.row, c.versus, c.column, c.metric)]]
    kept = [t for t in tested if t.supported]
    for t in tested:
        t.episodes_needed = (required_n(target(expect, t.paper_diff, margin), t.comparison.sd_episode, power, alpha)
                             if t.comparison.ok and not math.isnan(t.paper_diff) else None)
    result = ClaimResult(claim, tested, "inconclusive")
    result.reduced = sorted({change for t in kept for change in t.comparison.off_protocol})
    ran = [t for t in kept if t.comparison.status != "missing"]
    seeded = [t for t in ran if t.comparison.seeds]
    result.seeds = min((len(t.comparison.seeds) for t in seeded), default=0)
    result.seeds_needed, result.power_now, result.power_basis = claim_power(kept, expect, margin, result.seeds,
                                                                            alpha, power)
    if not kept:
        result.verdict, result.why = "inconclusive", "the paper's own numbers disagree with every comparison"
        return result
    if not ran:
        result.verdict = "not run"
        return result
    for t in kept:
        if t.comparison.status != "ok":
            t.outcome = t.comparison.status if t.comparison.status != "missing" else "not run"
    if not seeded:
        result.why = "; ".join(sorted({f"{t.comparison.status}: {t.comparison.reason}" for t in ran}))
        return result
    if any(not t.comparison.datasets <= set(PAPER_DATASETS) for t in seeded):
        result.why = "synthetic data ranks nothing"
        return result
    if result.seeds < MIN_SEEDS:
        result.verdict, result.why = "one seed", ONE_SEED
        return result
    complete = [t for t in kept if t.comparison.ok and len(t.comparison.seeds) >= MIN_SEEDS]
    for t in complete:
        t.outcome = _outcome(t.comparison, expect, margin, alpha)
        t.p_opposite = _p_opposite(t.comparison, expect, margin)
    adjusted = holm([t.p_opposite for t in complete])
    for t, p in zip(complete, adjusted):
        t.p_opposite = p
        if p < alpha:
            t.outcome = "opposite"
    if any(t.outcome == "opposite" for t in complete):
        result.verdict, result.why = "contradicted", "significant in the opposite direction (Holm within the claim)"
    elif len(complete) == len(kept) and all(t.outcome == "claimed" for t in complete):
        result.verdict = "reproduced"
        result.why = ("every comparison's 95% bound below the margin" if expect == "not_greater"
                      else "every comparison significant in the claimed direction")
    else:
        waiting = len(kept) - len(complete)
        result.why = (f"{waiting} comparison(s) not run, unpaired or invalid" if waiting else
                      "not every comparison significant in the claimed direction")
    return result


def evaluate_claims(config: dict, results: dict[str, list[dict]]) -> list[ClaimResult]:
    """Every claim of the config on the placed results of its table; qualitative claims are listed untested."""
    alpha, power = float(config.get("alpha", ALPHA)), float(config.get("power", POWER))
    out = []
    for claim in config["claims"]:
        if claim.get("qualitative"):
            out.append(ClaimResult(claim, [], "qualitative", claim["why_untested"]))
            continue
        comparisons = _comparisons(claim, results.get(claim["table"], []))
        for c in comparisons:
            c.off_protocol = off_protocol(load_table_def(claim["table"]), c.column, c.protocols)
        out.append(_judge(claim, comparisons, alpha, power))
    return out
