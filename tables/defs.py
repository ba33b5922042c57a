"""Table and figure definitions: configs/tables/<name>.yaml, validated, with the cells they ask for."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from bench.errors import UserError

TABLES_DIR = Path(__file__).resolve().parents[1] / "configs" / "tables"
LEARNERS = ("maml", "metasgd")


def available_tables() -> list[str]:
    """Names of the table definitions in configs/tables/."""
    return sorted(p.stem for p in TABLES_DIR.glob("*.yaml"))


def _resolve(name_or_path: str | os.PathLike) -> Path:
    text = str(name_or_path)
    known = ", ".join(available_tables())
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        if not Path(text).is_file():
            raise UserError(f"table definition {text} not found; known tables: {known}")
        return Path(text)
    path = TABLES_DIR / f"{text}.yaml"
    if not path.is_file():
        raise UserError(f"unknown table {text!r}; known tables: {known}")
    return path


def _is_list_of(value: object, kind: type) -> bool:
    return isinstance(value, list) and all(isinstance(item, kind) for item in value)


def _check(table_def: dict, where: Path) -> None:
    for key in ("name", "title", "columns", "rows"):
        if key not in table_def:
            raise UserError(f"{where}: missing key {key!r} (need name, title, columns, rows)")
    if not _is_list_of(table_def["columns"], str) or not table_def["columns"]:
        raise UserError(f"{where}: 'columns' must be a list of protocol names, e.g. [omniglot_20w1s, mini_5w1s]")
    if not _is_list_of(table_def["rows"], dict) or not table_def["rows"]:
        raise UserError(f"{where}: 'rows' must be a list of mappings (id, label, learner, regularizer, hyper), "
                        f"got {table_def['rows']!r:.60}")
    seen: set[str] = set()
    for row in table_def["rows"]:
        missing = [k for k in ("id", "label", "learner", "regularizer") if k not in row]
        if missing:
            raise UserError(f"{where}: row {row.get('id', '?')!r} lacks {', '.join(missing)}")
        if not isinstance(row.get("hyper", {}), dict):
            raise UserError(f"{where}: row {row['id']!r} has hyper {row['hyper']!r}; it must be a mapping, e.g. "
                            "{beta: 1.0e-4}")
        if not isinstance(row.get("columns", []), list):
            raise UserError(f"{where}: row {row['id']!r} has columns {row['columns']!r}; it must be a list")
        if row["id"] in seen:
            raise UserError(f"{where}: row id {row['id']!r} appears twice; row ids must be unique")
        seen.add(row["id"])
        if row["learner"] not in LEARNERS:
            raise UserError(f"{where}: row {row['id']!r} has learner {row['learner']!r}; use one of {LEARNERS}")
        extra = set(row.get("columns", [])) - set(table_def["columns"])
        if extra:
            raise UserError(f"{where}: row {row['id']!r} lists columns {sorted(extra)} that the table lacks")


def load_table_def(name_or_path: str | os.PathLike) -> dict:
    """Load and validate a table definition by name (configs/tables/<name>.yaml) or path."""
    path = _resolve(name_or_path)
    try:
        table_def = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        reason = str(exc).replace("\n", " ")
        raise UserError(f"{path}: not valid YAML ({reason}); known tables: {', '.join(available_tables())}")
    if not isinstance(table_def, dict):
        raise UserError(f"{path}: expected a mapping with name, title, columns, rows")
    _check(table_def, path)
    for row in table_def["rows"]:
        row.setdefault("hyper", {})
    return table_def


def row_columns(table_def: dict, row: dict) -> list[str]:
    """The columns a row is run in: its own `columns:` list, else all of the table's, in table order."""
    allowed = row.get("columns")
    return [c for c in table_def["columns"] if allowed is None or c in allowed]


def cells(table_def: dict) -> list[dict]:
    """Every (row, column) the definition asks to run: table, row, column, learner, regularizer, hyper."""
    return [{"table": table_def["name"], "row": row["id"], "column": column, "learner": row["learner"],
             "regularizer": row["regularizer"], "hyper": dict(row["hyper"])}
            for row in table_def["rows"] for column in row_columns(table_def, row)]
