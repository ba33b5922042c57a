"""Table and figure definitions: configs/tables/<name>.yaml, validated, with the cells they ask for."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from bench.core.attacks import check_norm
from bench.util.errors import UserError
from bench.util.paths import is_table_file, plain_name
from tables.paper import paper_runs

TABLES_DIR = Path(__file__).resolve().parents[1] / "configs" / "tables"
LEARNERS = ("maml", "metasgd")


KINDS = ("table", "curves")       # rendered as a table (with paired differences), or as learning curves
_TABLE_FILES: dict[str, Path] = {}  # researchers' own tables named by a file on the command line: name -> file


def available_tables() -> list[str]:
    """Names of the suite's table definitions (configs/tables/) and of the table files added in this process."""
    return sorted({p.stem for p in TABLES_DIR.glob("*.yaml")} | set(_TABLE_FILES))


def add_table_file(path: str | os.PathLike) -> str:
    """Load a researcher's own table definition from `path`, make it loadable by its name, and return the name."""
    table_def = load_table_def(path)
    name = table_def["name"]
    if (TABLES_DIR / f"{name}.yaml").is_file():
        raise UserError(f"{path}: table name {name!r} is one of the suite's tables; give your table another name")
    _TABLE_FILES[name] = Path(path).resolve()
    return name


def _resolve(name_or_path: str | os.PathLike) -> Path:
    text = str(name_or_path)
    known = ", ".join(available_tables())
    if is_table_file(text):
        if not Path(text).is_file():
            raise UserError(f"table definition {text} not found; known tables: {known}")
        return Path(text)
    if text in _TABLE_FILES:
        return _TABLE_FILES[text]
    path = TABLES_DIR / f"{text}.yaml"
    if not path.is_file():
        raise UserError(f"unknown table {text!r}; known tables: {known}, or a path to your own table's .yaml")
    return path


def _is_list_of(value: object, kind: type) -> bool:
    return isinstance(value, list) and all(isinstance(item, kind) for item in value)


def _check(table_def: dict, where: Path) -> None:
    for key in ("name", "title", "columns", "rows"):
        if key not in table_def:
            raise UserError(f"{where}: missing key {key!r} (need name, title, columns, rows)")
    plain_name(table_def["name"], f"{where}: table name")
    if table_def.get("kind", "table") not in KINDS:
        raise UserError(f"{where}: kind {table_def['kind']!r} is not one of {', '.join(KINDS)}")
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
        plain_name(row["id"], f"{where}: row id")
        for key in ("label", "group"):
            if any(c in str(row.get(key, "")) for c in "$\\") and f"{key}_md" not in row:
                raise UserError(f"{where}: row {row['id']!r} has a LaTeX {key} {row[key]!r}; give {key}_md too, "
                                "the same text for Markdown (e.g. label: \"$\\\\beta=1$\", label_md: \"β = 1\")")
        if row["id"] in seen:
            raise UserError(f"{where}: row id {row['id']!r} appears twice; row ids must be unique")
        seen.add(row["id"])
        if row["learner"] not in LEARNERS:
            raise UserError(f"{where}: row {row['id']!r} has learner {row['learner']!r}; use one of {LEARNERS}")
        extra = set(row.get("columns", [])) - set(table_def["columns"])
        if extra:
            raise UserError(f"{where}: row {row['id']!r} lists columns {sorted(extra)} that the table lacks")
        if "paper" in row and not paper_runs(paper_source(table_def, row)[0]).get(paper_source(table_def, row)[1]):
            raise UserError(f"{where}: row {row['id']!r} takes its paper numbers from {row['paper']!r}, which "
                            "tables/paper_numbers.yaml lacks; use <table>/<row id>, e.g. table1/metasgd")
    rows = {row["id"]: row for row in table_def["rows"]}
    for panel in table_def.get("panels", []):
        for row_id in panel.get("rows", [panel["row"]] if "row" in panel else []):
            if row_id not in rows or panel["column"] not in row_columns(table_def, rows[row_id]):
                raise UserError(f"{where}: panel {panel.get('title', '?')!r} shows row {row_id!r} in column "
                                f"{panel['column']!r}, which the rows do not run; add the row or its column")
        if "norm" in panel:
            check_norm(panel["norm"])


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
        row.setdefault("protocol", {})       # protocol settings of this row only (e.g. its meta_lr)
    return table_def


def paper_source(table_def: dict, row: dict) -> tuple[str, str]:
    """(table, row id) of the paper's numbers for a row: its own, or another table's row named by `paper:`."""
    table, _, row_id = row.get("paper", f"{table_def['name']}/{row['id']}").partition("/")
    return table, row_id


def has_paper_numbers(table_def: dict) -> bool:
    """Whether any row of the table has the paper's numbers (its own, or another table's row named by `paper:`)."""
    return any(paper_runs(paper_source(table_def, row)[0]).get(paper_source(table_def, row)[1])
               for row in table_def["rows"])


def attacks_of(table_def: dict, row_id: str, column: str) -> dict[str, list[float]]:
    """{norm: sorted attack sizes} the definition's panels ask of (row, column) at meta-test (pixel units)."""
    attacks: dict[str, set] = {}
    for panel in table_def.get("panels", []):
        if "norm" in panel and panel["column"] == column and row_id in panel["rows"]:
            attacks.setdefault(panel["norm"], set()).update(float(e) for e in panel["epsilons"])
    return {norm: sorted(eps) for norm, eps in sorted(attacks.items())}


def row_columns(table_def: dict, row: dict) -> list[str]:
    """The columns a row is run in: its own `columns:` list, else all of the table's, in table order."""
    allowed = row.get("columns")
    return [c for c in table_def["columns"] if allowed is None or c in allowed]


def cells(table_def: dict) -> list[dict]:
    """Every (row, column) the definition asks to run: table, row, column, learner, regularizer, hyper and the
    row's own protocol settings (applied after the preset's, before the command line's)."""
    return [{"table": table_def["name"], "row": row["id"], "column": column, "learner": row["learner"],
             "regularizer": row["regularizer"], "hyper": dict(row["hyper"]), "protocol": dict(row["protocol"])}
            for row in table_def["rows"] for column in row_columns(table_def, row)]
