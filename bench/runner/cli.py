"""Regenerate the paper's tables, or your own: meta-dropout-bench --table 2 (or python run_all.py from a clone)
[--preset paper|smoke] ... (see --help)."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from bench.runner.arguments import LOG_CHOICES, check_arguments
from bench.store.protocol import preset_names
from bench.util.errors import UserError


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Appends '(default: X)' to each flag's help, unless the help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    """The command line; --help shows every default."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=_ShowDefaults)
    ap.add_argument("--table", default="all",
                    help="1, 2, 3, fig4, fig5, fig6, fig7, curves, choices, or all (= 1,2,3,fig4-fig7), or the "
                         "path of your own table's .yaml (docs/your_table.md); comma-separated for several")
    ap.add_argument("--regularizers", action="append", default=[], metavar="FILE.py",
                    help="load your own regularizers from this Python file (runs it; repeatable; "
                         "docs/regularizers.md) (default: none)")
    ap.add_argument("--preset", default="paper",
                    help=f"one of configs/presets/: {', '.join(preset_names())} (what each changes: "
                         "docs/reproduce.md)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per cell (0..N-1)")
    ap.add_argument("--only", help="run only cells whose row id or cell name matches this glob (* ? [...]), e.g. "
                                   "'vib*'; no match is an error (default: every cell)")
    ap.add_argument("--results", default="results", help="results folder (shared by concurrent runs)")
    ap.add_argument("--data-root", help="data folder with omniglot/ and mini_imagenet/ (default: "
                                        "$META_DROPOUT_DATA, else ./data)")
    ap.add_argument("--device", default="auto", help="auto, cuda, cpu, or a list like cuda:0,cuda:1")
    ap.add_argument("--jobs", type=int, default=None,
                    help="cells run at once on the CPU (default: one per CPU core); on GPUs one cell per GPU")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads of each cell; results are bit-identical between runs with the same "
                         "value, whatever --jobs is")
    ap.add_argument("--backend", default="local", choices=["local", "ray"], help="where cells run")
    ap.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray instance)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a protocol setting for every cell, e.g. --set iterations=2000 (default: none)")
    ap.add_argument("--dry-run", action="store_true", help="list the cells with a time estimate and stop")
    ap.add_argument("--render-only", action="store_true", help="only render tables from existing results")
    ap.add_argument("--paired", action="store_true",
                    help="add to each table a column block of paired differences to its reference row")
    ap.add_argument("--claims", nargs="?", const="all", default=None, metavar="IDS",
                    help="also run and render the tables the paper's claims need, and claims.md/.tex with verdicts "
                         "(--table all does too); IDS (comma-separated, see configs/claims.yaml) keeps those claims; "
                         "with --only, each claim is judged on the columns of the selected cells")
    ap.add_argument("--simulate", action="store_true",
                    help="with --claims: run nothing; write tables/claims_simulated.md, the verdicts a perfect "
                         "replication with --seeds seeds would get (accuracies drawn around the paper's numbers)")
    ap.add_argument("--retry-failed", action="store_true",
                    help="run again the cells whose failure (non-finite training or test) is recorded")
    ap.add_argument("--yes", action="store_true", help="run a paper-preset sweep without a GPU anyway")
    ap.add_argument("--log", default="none", choices=LOG_CHOICES,
                    help="where each cell's training scalars also go, besides its CSV logs in cells/: tensorboard "
                         "writes a run per cell to <results>/tensorboard/<cell> (needs pip install tensorboard)")
    ap.add_argument("--collect", action="store_true",
                    help="run nothing: write every cell record of --results as tables/cells.csv (one row per cell) "
                         "and tables/episodes.csv.gz (one row per meta-test episode)")
    return ap.parse_args(argv)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Expand, run and render; user errors print one line and exit 2; Ctrl-C or SIGTERM stop resumably
    (exit 130 or 143). The meta-dropout-bench command and run_all.py."""
    args = parse_args(argv, prog)
    try:
        check_arguments(args)              # answers before torch is imported
        with sigterm_as_interrupt():
            from bench.runner.sweep import sweep
            return sweep(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"\ninterrupted{' by SIGTERM' if isinstance(stop, Terminated) else ''}: finished cells are saved "
              "and locks released; run the same command again to resume", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)
