"""Regenerate the paper's tables: python run_all.py --table 2 [--preset paper|smoke] ... (see --help)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import UserError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--table", default="all",
                    help="1, 2, 3, fig4, fig5, fig6, fig7, curves, choices, or all (= 1,2,3,fig4-fig7; "
                         "comma-separated for several)")
    ap.add_argument("--preset", default="paper", help="paper (full protocol), smoke (tiny, synthetic), release")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per cell (0..N-1)")
    ap.add_argument("--only", help="run only cells whose name or row id matches this glob, e.g. 'vib*'")
    ap.add_argument("--results", default="results", help="results folder (shared by concurrent runs)")
    ap.add_argument("--data-root", help="data folder with omniglot/ and mini_imagenet/ (or $META_DROPOUT_DATA)")
    ap.add_argument("--device", default="auto", help="auto, cuda, cpu, or a list like cuda:0,cuda:1")
    ap.add_argument("--jobs", type=int, default=1, help="parallel CPU workers (GPUs: one cell per GPU)")
    ap.add_argument("--backend", default="local", choices=["local", "ray"])
    ap.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray instance)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a protocol setting for every cell, e.g. --set iterations=2000")
    ap.add_argument("--dry-run", action="store_true", help="list the cells with a time estimate and stop")
    ap.add_argument("--render-only", action="store_true", help="only render tables from existing results")
    ap.add_argument("--paired", action="store_true",
                    help="add to each table a column block of paired differences to its reference row")
    ap.add_argument("--claims", action="store_true",
                    help="also run and render the tables the paper's claims need, and claims.md/.tex with verdicts "
                         "(--table all does too)")
    ap.add_argument("--yes", action="store_true", help="run a paper-preset sweep without a GPU anyway")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Expand, run and render; user errors print one line and exit 2."""
    args = parse_args(argv)
    try:
        from bench.sweep import sweep
        return sweep(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished cells are saved; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
