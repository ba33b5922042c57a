"""Checks made before the first cell of a sweep starts (also by --dry-run): the results folder can be written,
every table row names a regularizer and hyper-parameters that exist, the data the cells need is there (and a
--data-root that no cell reads is pointed out)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from bench.data.registry import check_data, split_shape
from bench.util.errors import UserError
from bench.util.notice import note
from regularizers import build_regularizer

RESULT_FOLDERS = ("cells", "checkpoints", "locks", "tables", "tensorboard")


def check_results_folder(root: Path, writable: bool) -> None:
    """--results must be a folder (created if missing) that this user can write in, when the run writes."""
    if root.exists() and not root.is_dir():
        raise UserError(f"--results {root} is a file, not a folder; give a folder (it is created if missing)")
    if not writable:
        return
    for folder in [root] + [root / sub for sub in RESULT_FOLDERS if (root / sub).is_dir()]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
            os.close(fd)
            os.remove(probe)
        except OSError as err:
            raise UserError(f"results folder {folder} is not writable ({err.strerror}); free space or fix its "
                            "permissions, or choose another --results") from None


def check_rows(cells: list[dict]) -> None:
    """Every row's regularizer and hyper-parameters exist and are in range (a row naming a wrong one fails here,
    before any cell runs)."""
    seen = set()
    for cell in cells:
        key = (cell["regularizer"], json.dumps(cell["hyper"], sort_keys=True))
        if key not in seen:
            seen.add(key)
            try:
                build_regularizer(cell["regularizer"], cell["hyper"])
            except (UserError, TypeError) as err:
                place = cell["places"][0]
                raise UserError(f"table {place['table']}, row '{place['row']}': {err}") from None


def check_data_for(cells: list[dict], data_root: str | None) -> None:
    """The data every cell still to run needs is where --data-root says, and fits the cell's protocol: ways,
    shots + queries, channels and image size (no image is read)."""
    needs = {(c["protocol"]["dataset"], (c["protocol"]["train_split"], c["protocol"]["test_split"])) for c in cells}
    for dataset, splits in sorted(needs):
        check_data(dataset, splits, data_root)
    for cell in cells:
        problem = shape_problem(cell["protocol"])
        if problem:
            raise UserError(f"cell {cell['name']}: {problem}")


def note_unused_data_root(cells: list[dict], data_root: str | None) -> None:
    """One notice line when --data-root is given but no selected cell reads real data (all synthetic); a
    $META_DROPOUT_DATA that stands for every run gets none."""
    if not data_root or not cells or any(cell["protocol"]["dataset"] != "synthetic" for cell in cells):
        return
    presets = ", ".join(sorted({cell["preset"] for cell in cells}))
    note(f"--data-root {data_root} is not used: the selected cells run on synthetic data (preset {presets})")


def shape_problem(protocol: dict) -> str | None:
    """Why a protocol cannot run on its dataset's splits (None when it can), in words that say what to change."""
    dataset, options = protocol["dataset"], protocol.get("data_options") or {}
    for role, split, examples in (("meta-training", protocol["train_split"], protocol["shots"] + protocol["queries"]),
                                  ("meta-test", protocol["test_split"],
                                   protocol["shots"] + (protocol.get("test_queries") or protocol["queries"]))):
        offer = split_shape(dataset, split, options)
        if protocol["ways"] > offer["classes"]:
            return (f"ways={protocol['ways']} but the {dataset} {split} split ({role}) has {offer['classes']} "
                    f"classes; use --set ways=N with N <= {offer['classes']}")
        if examples > offer["per_class"]:
            return (f"shots + queries = {examples} images per class for {role}, but {dataset} has "
                    f"{offer['per_class']}; lower shots or queries (test_queries)")
        if protocol["in_channels"] != offer["channels"] or protocol["image_size"] != offer["image_size"]:
            return (f"in_channels={protocol['in_channels']}, image_size={protocol['image_size']}, but {dataset} "
                    f"images are {offer['channels']}x{offer['image_size']}x{offer['image_size']}; drop the "
                    f"--set of in_channels / image_size")
    return None
