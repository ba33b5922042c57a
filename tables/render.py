"""Markdown rendering of a results table, and writing a table's Markdown and LaTeX files."""
from __future__ import annotations

import os
from pathlib import Path

from bench.util.atomic import write_text_atomic
from tables.latex import render_latex
from tables.layout import build_lines
from tables.markup import MARKDOWN
from tables.run_protocols import SMOKE_NOTE, header_text, is_smoke

def _pipe(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def render_markdown(table_def: dict, results: list[dict], paired: bool = False) -> str:
    """The table as Markdown: runs with their paper line, any cited block, then the notes; paired adds the
    column block of differences to the reference row."""
    lines, notes, extra = build_lines(table_def, results, MARKDOWN, paired)
    headers = [header_text(table_def, c) for c in table_def["columns"]] + extra
    title = table_def.get("title_md", table_def["title"])
    out = [f"### {table_def['name']}: {f'{SMOKE_NOTE}. ' if is_smoke(table_def) else ''}{title}", "",
           _pipe(["Model"] + headers),
           _pipe([":--"] + ["--:"] * len(headers))]
    styles = {"section": "***{}***", "group": "*{}*"}
    for line in lines:
        if line.kind in styles:
            out.append(_pipe([styles[line.kind].format(line.label)] + [""] * len(headers)))
        else:
            out.append(_pipe([line.label] + line.cells))
    return "\n".join(out + [""] + [f"- {note}" for note in notes]) + "\n"


def write_tables(table_def: dict, results: list[dict], out_dir: str | os.PathLike,
                 paired: bool = False) -> list[Path]:
    """Write <name>.md and <name>.tex (a LaTeX fragment) into out_dir atomically; return their paths."""
    out = Path(out_dir)
    name = table_def["name"]
    return [write_text_atomic(out / f"{name}.md", render_markdown(table_def, results, paired)),
            write_text_atomic(out / f"{name}.tex", render_latex(table_def, results, paired))]
