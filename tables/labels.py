"""Display titles of the protocol columns: (dataset group, shot setting), shared by tables and figures."""
from __future__ import annotations

COLUMN_TITLES = {
    "omniglot_20w1s": ("Omniglot 20-way", "1-shot"),
    "omniglot_20w5s": ("Omniglot 20-way", "5-shot"),
    "mini_5w1s": ("miniImageNet 5-way", "1-shot"),
    "mini_5w5s": ("miniImageNet 5-way", "5-shot"),
}


def column_title(column: str) -> tuple[str, str]:
    """(group, sub-title) of a protocol column; unknown ids show as themselves with no sub-title."""
    return COLUMN_TITLES.get(column, (column, ""))


def column_text(column: str) -> str:
    """A protocol column's one-line title, e.g. "Omniglot 20-way 1-shot"."""
    return " ".join(part for part in column_title(column) if part)
