"""Cells: a table's (row x column) expanded over seeds into runnable units, each named by a hash of
everything that determines its training."""
from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
from typing import Any

from bench.store.protocol import identity, load_protocol
from bench.util.paths import plain_name
from regularizers import FROM_FILES
from tables import attacks_of, cells as table_cells, load_table_def


def train_key(protocol: dict, learner: str, regularizer: str, hyper: dict, seed: int,
              regularizer_file: dict | None = None) -> str:
    """A short hash of every setting that shapes the result (and the text of a regularizer from a researcher's
    file): equal keys share a checkpoint and a result."""
    settings = {"protocol": identity(protocol), "learner": learner, "regularizer": regularizer, "hyper": hyper,
                "seed": seed}
    if regularizer_file is not None:
        settings["regularizer_sha256"] = regularizer_file["sha256"]
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def cell_name(protocol: dict, learner: str, regularizer: str, hyper: dict, seed: int,
              regularizer_file: dict | None = None) -> str:
    """Readable, unique file stem: protocol, learner, regularizer, hyper-parameters, seed, key."""
    hyper_text = "".join(f"-{k}={v}" for k, v in sorted(hyper.items()))
    key = train_key(protocol, learner, regularizer, hyper, seed, regularizer_file)
    return plain_name(f"{protocol['name']}__{learner}__{regularizer}{hyper_text}__seed{seed}__{key}", "cell name")


def selected(only: str, cell: str, row: str) -> bool:
    """--only: a shell-style glob (* ? [...]) on the cell name or on the row id, case-sensitive."""
    return fnmatch.fnmatchcase(cell, only) or fnmatch.fnmatchcase(row, only)


def no_match(only: str, table_cells: list[dict]) -> str:
    """The message for an --only pattern that selects no cell: the closest row ids, and how patterns match."""
    rows = sorted({place["row"] for cell in table_cells for place in cell["places"]})
    closest = difflib.get_close_matches(only.strip("*?"), rows, n=3, cutoff=0.5)
    hint = f"closest row ids: {', '.join(closest)}" if closest else f"row ids: {', '.join(rows[:12])}" + (
        " ..." if len(rows) > 12 else "")
    return (f"--only {only!r} selects no cell of these tables ({hint}); it is a glob on row ids and cell names, "
            "e.g. 'meta_dropout' for that row alone, 'meta_dropout*' for every row starting so")


def expand(tables: list[str], preset: str, seeds: int, overrides: dict[str, Any],
           only: str | None = None) -> list[dict]:
    """Unique cells for the tables: one per training run, with the union of the attacks ({norm: sizes}) asked of it.
    Each cell lists the (table, row, column) places it fills. `only` is a glob on the cell name or row id."""
    by_name: dict[str, dict] = {}
    for table in tables:
        table_def = load_table_def(table)
        for place in table_cells(table_def):
            protocol = load_protocol(place["column"], preset, {**place["protocol"], **overrides},
                                     place["regularizer"], place["learner"]).to_dict()
            source = FROM_FILES.get(place["regularizer"])
            for seed in range(seeds):
                name = cell_name(protocol, place["learner"], place["regularizer"], place["hyper"], seed, source)
                if only and not selected(only, name, place["row"]):
                    continue
                cell = by_name.setdefault(name, {
                    "name": name, "protocol": protocol, "learner": place["learner"],
                    "regularizer": place["regularizer"], "hyper": place["hyper"], "seed": seed,
                    "preset": preset, "overrides": overrides, "attacks": {}, "places": []})
                if source is not None:
                    cell["regularizer_file"] = dict(source)
                cell["places"].append({"table": table, "row": place["row"], "column": place["column"]})
                for norm, eps in attacks_of(table_def, place["row"], place["column"]).items():
                    cell["attacks"][norm] = sorted(set(cell["attacks"].get(norm, [])) | set(eps))
    return list(by_name.values())
