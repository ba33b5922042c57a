"""Rendering the claims: results/tables/claims.md / .tex, one block per claim (its verdict, then one line per
comparison), the paper's source sentences and the rules of the verdicts."""
from __future__ import annotations

import math

from tables.claims import DEFAULT_SEED_SD, ClaimResult, Tested
from tables.run_protocols import SMOKE_NOTE, describe_changes
from tables.defs import load_table_def
from tables.labels import column_text
from tables.markup import LATEX, MARKDOWN, Markup, escape_latex, fmt_interval, fmt_p, latex_headers, longtable, signed
from tables.paired_table import fmt_wtl

HEADERS = ["#", "Claim / comparison (row vs. reference)", "Paper Δ", "Measured Δ ± 95% CI", "p (Holm, opposite)",
           "Won / tied / lost (%)", "Outcome", "Seeds for 80% power"]
EXPECT_TEXT = {"greater": "row above reference", "less": "row below reference",
               "not_greater": "row not above reference + margin"}
OUTCOME_TEXT = {"claimed": "in the claimed direction", "opposite": "opposite, significant",
                "not significant": "not significant", "not run": "not run"}


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _what(tested: Tested, labels: dict[str, str], markup: Markup) -> str:
    c = tested.comparison
    what = f"{labels[c.row]} vs. {labels[c.versus]}, {markup.escape(column_text(c.column))}"
    return what + (f", {c.metric[2]} attack {c.metric[1]:g}" if c.metric else "")


def _comparison_line(tested: Tested, labels: dict[str, str], markup: Markup) -> list[str]:
    c = tested.comparison
    paper = "–" if math.isnan(tested.paper_diff) else signed(tested.paper_diff, markup)
    if c.ok:
        seeds = f"{len(c.seeds)} seeds" if c.basis == "seeds" else "1 seed, over episodes"
        measured = f"{fmt_interval(c.primary, markup)} {markup.small(f'({seeds})')}"
        p = fmt_p(c.p) + (f" ({fmt_p(tested.p_opposite)})" if not math.isnan(tested.p_opposite) else "")
        wtl = fmt_wtl(c)
    else:
        measured, p, wtl = (markup.missing if c.status == "missing" else markup.escape(c.status)), "", ""
    outcome = OUTCOME_TEXT.get(tested.outcome, markup.escape(tested.outcome))
    if c.status in ("unpaired", "invalid") and c.reason:
        outcome += " " + markup.small(f"({markup.escape(c.reason)})")
    return ["", _what(tested, labels, markup), paper, measured, p, wtl, outcome, ""]


def _on_synthetic(results: list[ClaimResult]) -> bool:
    """Whether any verdict rests on a comparison run on synthetic data (the smoke preset)."""
    return any(not t.comparison.datasets <= {"omniglot", "mini_imagenet"}
               for r in results for t in r.kept if t.comparison.ok)


def _row_label(row: dict, markup: Markup) -> str:
    """A row's label with its group, e.g. "Variational Information Bottleneck (additive): β = 1e-5"."""
    own = markup.label({k: v for k, v in row.items() if k != "group"})
    return f"{markup.group(row)}: {own}" if row.get("group") else own


def _power(result: ClaimResult, markup: Markup) -> str:
    if result.seeds_needed is None or _on_synthetic([result]):       # synthetic spreads say nothing of real runs
        return "–"
    now = "" if math.isnan(result.power_now) or result.seeds < 2 else (
        f"; {100 * result.power_now:.0f}{markup.pct} at {result.seeds}")
    return f"{result.seeds_needed} " + markup.small(f"({result.power_basis}{now})")


def claim_lines(results: list[ClaimResult], markup: Markup) -> list[tuple[str, list[str]]]:
    """("claim" | "comparison" | "disagree", cells) for every line of the claims table."""
    out = []
    for number, result in enumerate(results, 1):
        claim = result.claim
        if result.verdict == "qualitative":
            head = markup.bold(markup.escape(claim["claim"])) + " " + markup.small(f"(source {number})")
            out.append(("claim", [markup.bold(str(number)), head, "", "", "", "", markup.bold("qualitative, not tested")
                                  + " " + markup.small(f"({markup.escape(result.why)})"), ""]))
            continue
        labels = {row["id"]: _row_label(row, markup) for row in load_table_def(claim["table"])["rows"]}
        rule = EXPECT_TEXT[claim["expect"]] + (f" {claim['margin']:g}" if claim["expect"] == "not_greater" else "")
        narrowed = (f"; only {', '.join(column_text(c) for c in claim['columns'])}, the columns run"
                    if claim.get("narrowed") else "")
        head = markup.bold(markup.escape(claim["claim"])) + " " + markup.small(
            f"({claim['table']}{markup.escape(narrowed)}; expects {rule}; source {number})")
        verdict = markup.bold(markup.escape(result.label))
        if result.why:
            verdict += " " + markup.small(f"({markup.escape(result.why)})")
        out.append(("claim", [markup.bold(str(number)), head, "", "", "", "", verdict, _power(result, markup)]))
        out += [("comparison", _comparison_line(t, labels, markup)) for t in result.kept]
        for t in result.disagree:
            out.append(("disagree", ["", markup.small(f"the paper's own numbers disagree: {_what(t, labels, markup)}"),
                                     signed(t.paper_diff, markup), "", "", "", "left out", ""]))
    return out


def claim_notes(results: list[ClaimResult], markup: Markup) -> list[str]:
    """The decision rules, the power definitions and what the runs were."""
    pct, pm = markup.pct, markup.pm.strip()
    notes = [
        "Decision rules (docs/claims.md). A claim is judged on the comparisons its paper's own numbers support; "
        "comparisons where the paper's difference disagrees with its sentence are listed as left out. With one "
        "seed no claim reads reproduced or contradicted: a claim is about a training method, and one run is "
        "evidence about that run's models only. With 2+ seeds: reproduced = every kept comparison significant in "
        "the claimed direction at 0.05 by the t-test over seeds (an intersection-union test: no multiplicity "
        f"correction); for a \"not above\" claim, every upper 95{pct} bound below the declared margin; "
        "contradicted = some comparison significant in the opposite direction after Holm within the claim "
        "(the Holm p in parentheses); inconclusive = neither; not run = no result yet.",
        f"Measured {markup.delta}: row {markup.minus} reference on the same test episodes (differences on the "
        f"accuracy grid); with one seed the mean over episodes {pm} t-interval and the Wilcoxon p; with 2+ seeds "
        f"the mean of the per-seed differences {pm} t-interval over seeds and the t-test p. Paper {markup.delta}: "
        "the difference of the paper's reported means (none for Figure 5).",
        f"Seeds for 80{pct} power: the seeds at which a replication whose true differences are the paper's reads "
        "reproduced with 80% probability by these rules (the product of the kept comparisons' chances to be "
        "significant in the claimed direction), from the measured spread of the per-seed differences, or a "
        f"default of {DEFAULT_SEED_SD:g} points of seed spread per cell; the chance at the seeds run follows.",
    ]
    reduced = sorted({change for r in results for change in r.reduced})
    if reduced:
        notes.append("Not the paper's protocol: " + markup.escape("; ".join(describe_changes(reduced))) + ". Verdicts "
                     "say \"at reduced protocol\": they are about this protocol, not the paper's claim at its own.")
    if _on_synthetic(results):
        notes.append("These runs use synthetic data (smoke preset): they rank nothing, and every verdict they give "
                     "is inconclusive by rule; no power is shown (their spreads say nothing of real runs); the "
                     "table only shows that the pipeline works.")
    return notes


def verdict_lines(results: list[ClaimResult]) -> list[str]:
    """One line per claim for the terminal: 'id: verdict (why)'."""
    return [f"{r.claim['id']}: {r.label}" + (f" ({r.why})" if r.why else "") for r in results]


def latex_quote(text: str) -> str:
    """A quoted sentence of the paper in LaTeX: its $...$ math kept, the rest escaped, Greek letters as math."""
    out = []
    for index, part in enumerate(text.split("$")):
        if index % 2:                                  # between dollars: math, as the paper wrote it (no amsmath)
            out.append("$" + part.replace(r"\boldsymbol", r"\mathbf") + "$")
        else:
            out.append(escape_latex(part).replace("γ", r"$\gamma$").replace("μ", r"$\mu$"))
    return "``" + "".join(out) + "''"


def sources(results: list[ClaimResult], escape, quote, ellipsis: str) -> list[str]:
    """The numbered source sentences, quoted."""
    return [f"{number}. {escape(r.claim.get('where', ''))}: " + f" {ellipsis} ".join(quote(t) for t in r.claim["source"])
            for number, r in enumerate(results, 1)]


def _title(results: list[ClaimResult], title: str) -> list[str]:
    """The title, and the protocol the verdicts rest on."""
    reduced = sorted({change for r in results for change in r.reduced})
    protocol = ("the paper's protocol" if not reduced else
                "REDUCED PROTOCOL, not the paper's: " + "; ".join(describe_changes(reduced)))
    smoke = [f"**{SMOKE_NOTE}**: every verdict below is inconclusive by rule; this only shows that the pipeline "
             "runs.", ""] if _on_synthetic(results) else []
    return [f"# {title}", "", *smoke, f"Protocol: {protocol}.", ""]


def render_claims_markdown(results: list[ClaimResult], title: str = "Does the paper's claim reproduce?") -> str:
    """claims.md: the claims table, its notes and the paper's sentences."""
    out = _title(results, title) + ["| " + " | ".join(HEADERS) + " |",
                                     "|" + "|".join(["--:", ":--"] + ["--:"] * 4 + [":--", "--:"]) + "|"]
    out += ["| " + " | ".join(cells) + " |" for _, cells in claim_lines(results, MARKDOWN)]
    out += ["", *[f"- {note}" for note in claim_notes(results, MARKDOWN)], "", "Sources (the paper's text):", ""]
    return "\n".join(out + sources(results, MARKDOWN.escape, lambda t: f"“{t}”", "…")) + "\n"


def render_claims_latex(results: list[ClaimResult]) -> str:
    """claims.tex: the same as a LaTeX fragment (a booktabs longtable)."""
    body = []
    for kind, cells in claim_lines(results, LATEX):
        body += ([r"\midrule"] if kind == "claim" else []) + [" & ".join(cells) + r" \\"]
    notes = claim_notes(results, LATEX) + [r"Sources (the paper's text):"] + sources(
        results, escape_latex, latex_quote, r"\ldots{}")
    ragged = r">{\raggedright\arraybackslash}"
    return longtable("Does the paper's claim reproduce? Paired tests on shared meta-test episodes", "tab:claims",
                     f"@{{}}r{ragged}p{{6.5cm}}rrrr{ragged}p{{3cm}}{ragged}p{{2.5cm}}@{{}}", latex_headers(HEADERS),
                     body, notes)
