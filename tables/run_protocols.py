"""The protocols a table was actually run with (attached by the runner), and what they mean for its labels:
a table or figure whose cells ran on synthetic data says so, names the protocol run in its headers, and shows
no paper numbers and no "best"; results of any protocol other than the paper's say how it differs."""
from __future__ import annotations

import json
from functools import lru_cache

from bench.store.protocol import identity, load_protocol
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
    """A column's one-line header: the paper's protocol, or the protocol actually run (on synthetic data, or with
    any setting that shapes a result changed from the paper's)."""
    protocol = table_def.get("run_protocols", {}).get(column)
    if protocol and (protocol.get("dataset") == "synthetic" or column_changes(table_def, column)):
        return f"{run_text(protocol)} (for {column_text(column)})"
    return column_text(column)


def column_changes(table_def: dict, column: str) -> list[str]:
    """The settings of a column's run protocol that differ from the paper's (those a table row sets itself, as
    the learning curves' meta-lr, excepted)."""
    protocol = table_def.get("run_protocols", {}).get(column)
    if not protocol:
        return []
    own = {key for row in table_def["rows"] for key in row.get("protocol", {})}
    paper, ran = identity(load_protocol(column, "paper").to_dict()), identity(protocol)
    return [f"{k} {_value(ran.get(k, 'default'))} (paper {_value(paper.get(k, 'default'))})"
            for k in sorted((set(paper) | set(ran)) - set(NOT_REDUCING) - own) if ran.get(k) != paper.get(k)]


def result_changes(table_def: dict, result: dict) -> list[tuple[str, str, str, str]]:
    """How a placed result's protocol differs from the paper's for its row and column."""
    config = result.get("config", {})
    return protocol_changes(table_def, result["row"], result["column"], config.get("preset"),
                            config.get("protocol") or {})


def off_protocol_note(table_def: dict, results: list[dict]) -> str | None:
    """'Not the paper's protocol ...: <every change among the results>', or None."""
    changes = sorted({change for r in results for change in result_changes(table_def, r)})
    return (f"Not the paper's protocol, so no difference to the paper's numbers is shown: "
            f"{'; '.join(describe_changes(changes))}." if changes else None)


# settings that do not change what a cell's final result estimates (test_episodes: only its precision, in its CI)
NOT_REDUCING = ("name", "eval_at", "test_episodes")


@lru_cache(maxsize=None)
def _paper_identity(column: str, row_protocol: str, regularizer: str, learner: str) -> dict:
    protocol = load_protocol(column, "paper", json.loads(row_protocol), regularizer, learner)
    return identity(protocol.to_dict())


def _value(value: object) -> str:
    return "changed" if isinstance(value, (dict, list)) else str(value)


def protocol_changes(table_def: dict, row_id: str, column: str, preset: str | None,
                     protocol: dict) -> list[tuple[str, str, str, str]]:
    """(preset, setting, value run, paper's value) for every setting that shapes a result and differs from the
    paper preset's protocol for this row and column; empty for the paper's protocol."""
    row = next(r for r in table_def["rows"] if r["id"] == row_id)
    paper = _paper_identity(column, json.dumps(row.get("protocol", {}), sort_keys=True), row["regularizer"],
                            row["learner"])
    ran = identity(protocol)
    keys = sorted((set(paper) | set(ran)) - set(NOT_REDUCING))
    return [(preset or "paper", k, _value(ran.get(k, "default")), _value(paper.get(k, "default"))) for k in keys
            if ran.get(k) != paper.get(k)]


def describe_changes(changes: list[tuple[str, str, str, str]]) -> list[str]:
    """One line per preset: 'preset cpu_study: iterations 4000 (paper 40000); ways 5 (paper 20)', the paper's
    values of several columns joined."""
    by_preset: dict[str, dict[str, tuple[set, set]]] = {}
    for preset, key, ran, paper in changes:
        ran_values, paper_values = by_preset.setdefault(preset, {}).setdefault(key, (set(), set()))
        ran_values.add(ran)
        paper_values.add(paper)
    return [("" if preset == "paper" else f"preset {preset}: ") + "; ".join(
        f"{key} {', '.join(sorted(ran))} (paper {', '.join(sorted(paper))})" for key, (ran, paper) in sorted(keys.items()))
        for preset, keys in sorted(by_preset.items())]


def off_protocol(table_def: dict, column: str, protocols: list[dict]) -> list[tuple[str, str, str, str]]:
    """Every change from the paper's protocol among compared cells ({"row", "preset", "protocol"} each)."""
    return sorted({change for p in protocols for change in protocol_changes(table_def, p["row"], column,
                                                                              p.get("preset"),
                                                                              p.get("protocol") or {})})
