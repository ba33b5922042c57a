"""The paper's reported numbers (tables/paper_numbers.yaml): parsed "mean ± ci" cells per row and column."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.yaml")
_CELL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:±\s*(\d+(?:\.\d+)?))?\s*$")


@dataclass(frozen=True)
class Reported:
    """One reported cell: mean and 95% CI (None where the paper prints none), and the printed digits."""

    mean: float
    ci: float | None
    mean_text: str
    ci_text: str | None


def parse_reported(text: str) -> Reported:
    """Parse "95.23 ± 0.17" or "93.8"; raise ValueError on anything else."""
    match = _CELL.match(text)
    if not match:
        raise ValueError(f"not a reported cell: {text!r}")
    mean_text, ci_text = match.groups()
    return Reported(float(mean_text), float(ci_text) if ci_text else None, mean_text, ci_text)


@lru_cache(maxsize=None)
def load_paper_numbers() -> dict:
    """The parsed paper_numbers.yaml: {table: {"runs": {row: {column: Reported}}, "cited": [row dicts]}}."""
    raw = yaml.safe_load(PAPER_NUMBERS.read_text(encoding="utf-8"))
    parsed = {}
    for table, entry in raw.items():
        runs = {row: {col: parse_reported(text) for col, text in row_cells.items()}
                for row, row_cells in entry.get("runs", {}).items()}
        cited = [dict(row, cells={col: parse_reported(text) for col, text in row["cells"].items()})
                 for row in entry.get("cited", [])]
        parsed[table] = {"runs": runs, "cited": cited}
    return parsed


def paper_runs(table: str) -> dict[str, dict[str, Reported]]:
    """{row id: {column: Reported}} for a table's own runs; empty for a table the paper gives no numbers for."""
    return load_paper_numbers().get(table, {}).get("runs", {})


def cited_rows(table: str) -> list[dict]:
    """The rows a table cites from other papers: id, label, optional label_md, cells {column: Reported}."""
    return load_paper_numbers().get(table, {}).get("cited", [])

