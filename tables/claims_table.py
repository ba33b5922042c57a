"""Rendering the claims: results/tables/claims.md / .tex, one block per claim (its verdict, then one line per
comparison), the paper's source sentences and the rules of the verdicts."""
from __future__ import annotations

from tables.claims import ClaimResult, Tested
from tables.defs import load_table_def
from tables.labels import column_text
from tables.markup import LATEX, MARKDOWN, Markup, escape_latex, fmt_interval, fmt_p, latex_headers, longtable, signed
from tables.paired_table import fmt_wtl

HEADERS = ["#", "Claim / comparison (row vs. reference)", "Paper Δ", "Measured Δ ± 95% CI", "Holm p",
           "Won / tied / lost (%)", "Verdict", "Episodes for 80% power", "Seeds for 80% power"]
EXPECT_TEXT = {"greater": "row above reference", "less": "row below reference",
               "not_greater": "row not above reference"}


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _largest(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _comparison_line(tested: Tested, labels: dict[str, str], markup: Markup) -> list[str]:
    c = tested.comparison
    what = f"{labels[c.row]} vs. {labels[c.versus]}, {markup.escape(column_text(c.column))}"
    if c.metric:
        what += f", {c.metric[2]} attack {c.metric[1]:g}"
    paper = "–" if tested.paper_diff != tested.paper_diff else signed(tested.paper_diff, markup)
    if c.ok:
        seeds = f"{len(c.seeds)} seed{'s' if len(c.seeds) > 1 else ''}, {c.basis}"
        measured = f"{fmt_interval(c.primary, markup)} {markup.small(f'({seeds})')}"
        p, wtl = fmt_p(c.p_holm), fmt_wtl(c)
    else:
        measured, p, wtl = markup.missing, "", ""
    verdict = tested.verdict + " " + markup.small(f"({markup.escape(tested.why)})") if tested.why else tested.verdict
    return ["", what, paper, measured, p, wtl, verdict, _count(tested.episodes_needed), _count(tested.seeds_needed)]


def claim_lines(results: list[ClaimResult], markup: Markup) -> list[tuple[str, list[str]]]:
    """("claim" | "comparison", cells) for every line of the claims table."""
    out = []
    for number, result in enumerate(results, 1):
        claim = result.claim
        labels = {row["id"]: markup.label(row) for row in load_table_def(claim["table"])["rows"]}
        head = markup.bold(markup.escape(claim["claim"])) + " " + markup.small(
            f"({claim['table']}; expects {EXPECT_TEXT[claim['expect']]}; source {number})")
        out.append(("claim", [markup.bold(str(number)), head, "", "", "", "", markup.bold(result.verdict),
                              _count(_largest([t.episodes_needed for t in result.tested])),
                              _count(_largest([t.seeds_needed for t in result.tested]))]))
        out += [("comparison", _comparison_line(t, labels, markup)) for t in result.tested]
    return out


def claim_notes(results: list[ClaimResult], markup: Markup) -> list[str]:
    """The verdict rules, the power definitions and what the runs were."""
    pct, pm = markup.pct, markup.pm.strip()
    notes = [
        f"Verdicts: reproduced = significant in the claimed direction (Holm-adjusted p < 0.05 over every comparison "
        f"of this table); contradicted = significant in the opposite direction; inconclusive = neither; not run = "
        f"a side has no result. \"Not above\" claims are reproduced only when the whole 95{pct} CI lies below the "
        "margin (0 points unless stated) and contradicted when the row is significantly better. A claim is "
        "reproduced when all its comparisons are, contradicted when any is.",
        f"Measured {markup.delta}: row {markup.minus} reference on the same test episodes; with one seed the mean over "
        f"episodes {pm} t-interval and the Wilcoxon signed-rank p (a statement about these trained models); with 2+ "
        f"seeds the mean of per-seed differences {pm} t-interval over seeds and the t-test p (about the training "
        f"method). Paper {markup.delta}: the difference of the paper's reported means (none for Figure 5).",
        f"Power: test episodes (per seed) and seeds at which a two-sided t-test at 0.05 detects the paper's "
        f"difference with 80{pct} probability, from the measured standard deviation of the per-episode (resp. "
        "per-seed) differences; – where the paper gives no difference in the claimed direction or a deviation is "
        "not measured yet (seeds need 2+ seeds).",
    ]
    used = [t.comparison for r in results for t in r.tested if t.comparison.ok]
    if any(not c.datasets <= {"omniglot", "mini_imagenet"} for c in used):
        notes.append("These runs use synthetic data (smoke preset): they rank nothing, and every verdict they give "
                     "is inconclusive by rule; the table only shows that the pipeline works.")
    return notes


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


def render_claims_markdown(results: list[ClaimResult]) -> str:
    """claims.md: the claims table, its notes and the paper's sentences."""
    out = ["# Does the paper's claim reproduce?", "", "| " + " | ".join(HEADERS) + " |",
           "|" + "|".join(["--:", ":--"] + ["--:"] * 4 + [":--"] + ["--:"] * 2) + "|"]
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
                     f"@{{}}r{ragged}p{{6.5cm}}rrrr{ragged}p{{3cm}}rr@{{}}", latex_headers(HEADERS), body, notes)
