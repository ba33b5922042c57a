"""Cells: a table's (row x column) expanded over seeds into runnable units, each named by a hash of
everything that determines its training."""
from __future__ import annotations

import fnmatch
import hashlib
import json
from typing import Any

from bench.store.protocol import identity, load_protocol
from bench.util.paths import plain_name
from tables import attacks_of, cells as table_cells, load_table_def


def train_key(protocol: dict, learner: str, regularizer: str, hyper: dict, seed: int) -> str:
    """A short hash of every setting that shapes the result: equal keys share a checkpoint and a result."""
    blob = json.dumps({"protocol": identity(protocol), "learner": learner, "regularizer": regularizer,
                       "hyper": hyper, "seed": seed}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def cell_name(protocol: dict, learner: str, regularizer: str, hyper: dict, seed: int) -> str:
    """Readable, unique file stem: protocol, learner, regularizer, hyper-parameters, seed, key."""
    hyper_text = "".join(f"-{k}={v}" for k, v in sorted(hyper.items()))
    key = train_key(protocol, learner, regularizer, hyper, seed)
    return plain_name(f"{protocol['name']}__{learner}__{regularizer}{hyper_text}__seed{seed}__{key}", "cell name")


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
            for seed in range(seeds):
                name = cell_name(protocol, place["learner"], place["regularizer"], place["hyper"], seed)
                if only and not (fnmatch.fnmatch(name, only) or fnmatch.fnmatch(place["row"], only)):
                    continue
                cell = by_name.setdefault(name, {
                    "name": name, "protocol": protocol, "learner": place["learner"],
                    "regularizer": place["regularizer"], "hyper": place["hyper"], "seed": seed,
                    "preset": preset, "overrides": overrides, "attacks": {}, "places": []})
                cell["places"].append({"table": table, "row": place["row"], "column": place["column"]})
                for norm, eps in attacks_of(table_def, place["row"], place["column"]).items():
                    cell["attacks"][norm] = sorted(set(cell["attacks"].get(norm, [])) | set(eps))
    return list(by_name.values())
