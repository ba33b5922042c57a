"""A cell's logs in the formats people already use: its training curve and its meta-tests as CSV files beside its
JSON, a row appended (and flushed) as each is known, so that `tail -f` follows a running cell; with --log
tensorboard, the same scalars as one TensorBoard run per cell. Whenever training starts or resumes, the files and
the run are rebuilt from what the checkpoint holds, so a resumed cell never repeats or skips an iteration."""
from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from bench.runner.arguments import require_tensorboard
from bench.util.atomic import append_text, write_text_atomic

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

TRAIN_COLUMNS = ("iteration", "loss", "accuracy")          # a point of the training curve (bench.core.train)
TEST_COLUMNS = ("iteration", "mean", "ci95", "n_episodes")  # a meta-test on the cell's fixed episodes
TENSORBOARD_SCALARS = {"train": {"loss": "train/loss", "accuracy": "train/accuracy"},
                       "test": {"mean": "test/accuracy", "ci95": "test/ci95"}}


def _rows(points: list[dict], columns: tuple[str, ...]) -> str:
    """CSV lines of the points' `columns`, numbers written in full (they read back equal)."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([point[column] for column in columns] for point in points)
    return text.getvalue()


def _table(points: list[dict], columns: tuple[str, ...]) -> str:
    """A whole CSV file: the header, then a row per point."""
    return ",".join(columns) + "\n" + _rows(points, columns)


def _tensorboard_run(folder: Path) -> SummaryWriter:
    """A writer for a run rebuilt from scratch: earlier event files are removed, and purge_step=0 tells a
    TensorBoard that already read them to drop their events."""
    require_tensorboard()
    from torch.utils.tensorboard import SummaryWriter
    for earlier in folder.glob("events.out.tfevents.*"):
        earlier.unlink()
    return SummaryWriter(str(folder), purge_step=0)


class CellLogs:
    """The files one cell logs to while it runs: `train_csv` (TRAIN_COLUMNS, a row per point of the training
    curve), `test_csv` (TEST_COLUMNS, a row per learning-curve point and the final test) and, when `tensorboard` is
    a folder, a TensorBoard run there. `tests_until(i)` gives the meta-tests already stored up to iteration i. It is
    the `log` of bench.core.train.meta_train."""

    def __init__(self, train_csv: Path, test_csv: Path, tensorboard: Path | None,
                 tests_until: Callable[[int], list[dict]]):
        self.train_csv, self.test_csv, self.tensorboard = train_csv, test_csv, tensorboard
        self.tests_until = tests_until
        self.writer: SummaryWriter | None = None
        self.tested: set[int] = set()             # iterations whose meta-test this run has logged

    def __enter__(self) -> CellLogs:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.writer is not None:
            self.writer.close()

    def start(self, iteration: int, points: list[dict]) -> None:
        """Training starts after `iteration` with the curve `points`: rewrite both files (and the TensorBoard run)
        with those points and the meta-tests stored up to it, nothing beyond."""
        tests = self.tests_until(iteration)
        write_text_atomic(self.train_csv, _table(points, TRAIN_COLUMNS))
        write_text_atomic(self.test_csv, _table(tests, TEST_COLUMNS))
        self.tested = {test["iteration"] for test in tests}
        if self.tensorboard is not None:
            self.writer = _tensorboard_run(self.tensorboard)
            for point in points:
                self._scalars("train", point)
            for test in tests:
                self._scalars("test", test)

    def add(self, point: dict) -> None:
        """Append a point of the training curve."""
        append_text(self.train_csv, _rows([point], TRAIN_COLUMNS))
        self._scalars("train", point)

    def add_test(self, test: dict) -> None:
        """Append a learning-curve point (a meta-test at an iteration) as training passes it."""
        append_text(self.test_csv, _rows([test], TEST_COLUMNS))
        self.tested.add(test["iteration"])
        self._scalars("test", test)

    def finish(self, tests: list[dict]) -> None:
        """After the final meta-test: rewrite the test file with every meta-test of the cell, in order (points
        evaluated only now included), and log those the TensorBoard run lacks."""
        write_text_atomic(self.test_csv, _table(tests, TEST_COLUMNS))
        for test in tests:
            if test["iteration"] not in self.tested:
                self._scalars("test", test)

    def _scalars(self, kind: str, point: dict) -> None:
        if self.writer is None:
            return
        for key, tag in TENSORBOARD_SCALARS[kind].items():
            self.writer.add_scalar(tag, point[key], point["iteration"])
        self.writer.flush()
