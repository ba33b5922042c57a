"""Learning curves: a cell also meta-tests at intermediate iterations (the protocol's `eval_at`) on its fixed test
episodes. When training passes such an iteration the learner is snapshotted, then evaluated without disturbing
training; snapshots and evaluations are files, so an interrupted cell neither loses nor repeats a point."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from bench.api import Experiment
from bench.core import checkpoint
from bench.core.checkpoint import CheckpointUnusable
from bench.store.cell_record import check_point
from bench.store.results import set_aside
from bench.core.learner import MetaLearner
from bench.util.atomic import write_text_atomic
from bench.util.errors import UserError
from bench.util.notice import warn


def curve_folder(checkpoint_path: Path) -> Path:
    """Where a cell keeps its curve snapshots and evaluations: beside its checkpoint."""
    return checkpoint_path.with_suffix(".curve")


def _copy_parameters(learner: MetaLearner, values: dict[str, torch.Tensor]) -> None:
    """Copy meta-learned values into the learner's parameters in place (their addresses stay)."""
    with torch.no_grad():
        for name, parameter in learner.named_parameters().items():
            parameter.copy_(values[name])


class CurveRecorder:
    """Snapshots and meta-tests an experiment at its protocol's intermediate `eval_at` iterations."""

    def __init__(self, experiment: Experiment, folder: Path | None, progress: bool = False):
        self.experiment, self.folder, self.progress = experiment, folder, progress
        protocol = experiment.protocol
        self.final = protocol.iterations
        self.points = sorted({i for i in protocol.eval_at if i < self.final})
        self.memory: dict[int, dict] = {}            # evaluations when there is no folder (API use)
        self.seconds = 0.0                           # spent evaluating in this process

    def _snapshot_path(self, iteration: int) -> Path:
        return self.folder / f"at_{iteration}.pt"

    def _result_path(self, iteration: int) -> Path:
        return self.folder / f"at_{iteration}.json"

    def _stored(self, iteration: int) -> dict | None:
        if self.folder is None:
            return self.memory.get(iteration)
        path = self._result_path(iteration)
        try:
            return check_point(json.loads(path.read_text()), iteration, self.experiment.protocol.test_episodes)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:               # damaged (or not UTF-8, or not JSON): evaluated again
            aside = set_aside(path)
            warn(f"{path} is not a valid learning-curve point ({str(err).splitlines()[0][:200]}); moved it to "
                 f"{aside}; the point is evaluated again")
            return None

    def _snapshot(self, iteration: int) -> dict:
        """The learner state snapshotted at `iteration`; CheckpointUnusable (the runner sets it aside) when it
        cannot be read or is not this cell's learner."""
        path = self._snapshot_path(iteration)
        with checkpoint.resuming_from(path):
            state = checkpoint.load(path)
            missing = sorted(set(self.experiment.learner.named_parameters()) - set(state))
            if missing:
                raise KeyError(f"it holds no {missing[0]}: not this cell's learner")
        return state

    def recover(self, checkpoint_path: Path | None) -> None:
        """Before (re)starting training: a checkpoint taken at an evaluation point whose snapshot was not yet
        written (a crash in between) gives that snapshot; a point lost otherwise is an error."""
        if self.folder is None or checkpoint_path is None or not checkpoint_path.exists() or not self.points:
            return
        with checkpoint.resuming_from(checkpoint_path):         # an unusable file: set aside, cell restarts
            state = checkpoint.load(checkpoint_path)
            reached, learner_state = state["iteration"], state["learner"]
        for point in self.points:
            if point > reached or self._stored(point) is not None or self._snapshot_path(point).exists():
                continue
            if point != reached:            # lost (set aside, or deleted): only training again gives it back
                raise CheckpointUnusable(checkpoint_path, f"the learning-curve point at iteration {point} has no "
                                                          "evaluation and no snapshot left; training again")
            checkpoint.atomic_save(learner_state, self._snapshot_path(point))

    def stored_until(self, iteration: int) -> list[dict]:
        """The evaluations already stored at or before `iteration`, in order."""
        stored = [self._stored(point) for point in self.points if point <= iteration]
        return [point for point in stored if point is not None]

    def on_iteration(self, done: int) -> dict | None:
        """Training hook: at an evaluation point, snapshot the learner and meta-test it (unless an earlier run of
        the cell did); returns the point there, None elsewhere."""
        if done not in self.points:
            return None
        stored = self._stored(done)
        if stored is not None:
            return stored
        state = self.experiment.learner.state_dict()
        if self.folder is not None:
            checkpoint.atomic_save(state, self._snapshot_path(done))
        return self._evaluate(done, state)

    def _evaluate(self, iteration: int, state: dict) -> dict:
        """Meta-test the parameters of `state` on the cell's fixed episodes, then put the training parameters back.
        The meta-test draws its noise from per-episode generators, so the training noise generator is never
        touched (nor set: a CUDA graph may hold it); the global RNGs are forked."""
        learner = self.experiment.learner
        began = time.perf_counter()
        current = {name: value.detach().clone() for name, value in learner.named_parameters().items()}
        devices = [learner.device] if learner.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            _copy_parameters(learner, state)
            try:
                result = self.experiment.test(progress=self.progress)
            finally:
                _copy_parameters(learner, current)
        self.seconds += time.perf_counter() - began
        point = {"iteration": iteration, **result}
        if self.folder is None:
            self.memory[iteration] = point
        else:
            write_text_atomic(self._result_path(iteration), json.dumps(point))
        return point

    def finish(self, final_test: dict) -> list[dict] | None:
        """After training and the final meta-test: every point (evaluating any left from snapshots), ending with
        the final result itself; None when the protocol asks for no intermediate evaluation."""
        if not self.experiment.protocol.eval_at:
            return None
        points = []
        for iteration in self.points:
            point = self._stored(iteration)
            if point is None:
                if self.folder is None:
                    raise UserError(f"no evaluation at iteration {iteration}: train with the curve recorder on")
                if not self._snapshot_path(iteration).exists():       # lost: only training again gives it back
                    raise CheckpointUnusable(self.folder.with_suffix(".pt"), f"the learning-curve point at "
                                             f"iteration {iteration} has no evaluation and no snapshot; training again")
                point = self._evaluate(iteration, self._snapshot(iteration))
            points.append(point)
        final = {k: v for k, v in final_test.items() if k != "robustness"}
        return points + [{"iteration": self.final, **final}]
