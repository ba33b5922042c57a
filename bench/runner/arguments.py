"""Checks of the command line that need nothing heavy (no torch): they answer at once, before any import that
takes seconds."""
from __future__ import annotations

import argparse
import importlib.util
import os

from bench.util.errors import UserError
from bench.util.paths import is_table_file

TABLE_NAMES = {"1": "table1", "2": "table2", "3": "table3", "fig4": "fig4", "fig5": "fig5", "fig6": "fig6",
               "fig7": "fig7", "curves": "curves", "choices": "choices"}
PAPER_TABLES = ["1", "2", "3", "fig4", "fig5", "fig6", "fig7"]      # what 'all' means: the paper's tables, figures
LOG_CHOICES = ("none", "tensorboard")                             # --log: where the training scalars also go


def table_names(spec: str) -> list[str]:
    """'all', '2', 'fig5', 'curves', 'choices' (the reproduction's own switches), a path to one's own table's
    .yaml, or several comma-separated -> table definition names and paths."""
    keys = PAPER_TABLES if spec == "all" else [s.strip() for s in spec.split(",")]
    missing = [k for k in keys if is_table_file(k) and not os.path.isfile(k)]
    if missing:
        raise UserError(f"table definition {', '.join(missing)} not found (a path to a .yaml file)")
    unknown = [k for k in keys if not is_table_file(k) and k not in TABLE_NAMES]
    if unknown:
        raise UserError(f"unknown table {', '.join(unknown)}; choose from {', '.join(TABLE_NAMES)} or all, or give "
                        "the path of your own table's .yaml (docs/your_table.md)")
    return [k if is_table_file(k) else TABLE_NAMES[k] for k in keys]


def check_counts(args: argparse.Namespace) -> None:
    """--jobs, --threads and --seeds are counts: at least 1 (--jobs may be left to the machine)."""
    for flag, value in (("--jobs", args.jobs), ("--threads", args.threads), ("--seeds", args.seeds)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value} is not allowed: {flag} must be an integer >= 1")


def require_tensorboard() -> None:
    """--log tensorboard needs the tensorboard package: a UserError saying how to install it when it is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise UserError("--log tensorboard needs the tensorboard package: pip install tensorboard (or pip install "
                        "-e '.[log]'), or use --log none")


def check_arguments(args: argparse.Namespace) -> None:
    """Everything about the command line that can be checked without loading the suite."""
    table_names(args.table)
    check_counts(args)
    if args.log == "tensorboard":
        require_tensorboard()
    if getattr(args, "simulate", False) and not args.claims:
        raise UserError("--simulate simulates the claims' verdicts: use it with --claims (and --seeds K)")
