"""Checks made before the first cell of a sweep starts (also by --dry-run): the results folder can be written,
every table row names a regularizer and hyper-parameters that exist, the data the cells need is there."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from bench.data.registry import check_data
from bench.util.errors import UserError
from regularizers import build_regularizer

RESULT_FOLDERS = ("cells", "checkpoints", "locks", "tables")


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
    """The data every cell still to run needs is where --data-root says (no image is read)."""
    needs = {(c["protocol"]["dataset"], (c["protocol"]["train_split"], c["protocol"]["test_split"])) for c in cells}
    for dataset, splits in sorted(needs):
        check_data(dataset, splits, data_root)
