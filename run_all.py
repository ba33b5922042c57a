"""Regenerate the paper's tables from a clone: python run_all.py --table 2 (the meta-dropout-bench command of
`pip install -e .` is the same; see --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.runner.cli import main, parse_args  # noqa: E402  (the clone's bench, wherever python is started)

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main(prog="run_all.py"))
