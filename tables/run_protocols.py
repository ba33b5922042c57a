"""The protocols a table was actually run with (attached by the runner), and what they mean for its labels:
a table or figure whose cells ran on synthetic data says so, names the protocol run in its headers, and shows
no paper numbers and no "best"."""
from __future__ import annotations

from tables.labels import column_text

SMOKE_NOTE = "SMOKE: synthetic data, ranks nothing"


def with_run_protocols(table_def: dict, cells: list[dict]) -> dict:
    """The definition with 'run_protocols': {column: protocol dict} from the cells that fill it."""
    protocols = {}
    for cell in cells:
        for place in cell["places"]:
            if place["table"] == table_def["name"]:
                protocols.setdefault(place["column"], cell["protocol"])
    return {**table_def, "run_protocols": protocols}


def is_smoke(table_def: dict) -> bool:
    """Whether any column of the table ran on synthetic data."""
    return any(p.get("dataset") == "synthetic" for p in table_def.get("run_protocols", {}).values())


def run_text(protocol: dict) -> str:
    """'synthetic 5-way 1-shot 16x16' for a protocol dict."""
    size = protocol["image_size"]
    return f"{protocol['dataset']} {protocol['ways']}-way {protocol['shots']}-shot {size}x{size}"


def header_text(table_def: dict, column: str) -> str:
    """A column's one-line header: the paper's protocol, or on synthetic data the protocol actually run."""
    protocol = table_def.get("run_protocols", {}).get(column)
    if protocol and protocol.get("dataset") == "synthetic":
        return f"{run_text(protocol)} (for {column_text(column)})"
    return column_text(column)
