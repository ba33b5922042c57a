"""The per-task path on several CPU processes, one intra-op thread each: the meta-batch's tasks are split into
contiguous shares, this process computes the first and the workers the others, and the per-task gradients are summed
here in task order. Each task is the same computation as on the one-process path at one thread, so the meta-gradient
is bit for bit the same (tests/execution/test_task_processes.py). A 5-way task's ops run on five-image tensors, where
a second intra-op thread gains little (fixed per-op costs) while a second process doubles the throughput (measured:
bench/benchmarks/peers.py). Worker processes are spawned (no fork of a threaded parent) and exit with this one:
`python -m bench.execution.task_worker` (not multiprocessing, which would re-run the caller's main script), talking
over its standard input and output; parameters, episodes and noise travel as pickled arrays each step, pickled into
and out of the pipe as they go (5-way: the parameters 0.5-1 MB, per task 0.25 MB of images and, with meta-dropout, 7
MB of noise for the five inner steps)."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import traceback
from typing import IO, Any, Callable

import numpy as np
import torch

from bench.execution.allocator import retain_freed_memory
from bench.data.episodes import Episodes
from bench.core.learner import MetaLearner
from bench.core.meta_gradient import TaskLearner, sum_task_results, task_inputs, task_meta_gradient
from bench.util.devices import intra_op_threads

TaskResult = tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repository


def _map_leaves(value: Any, kind: type, fn: Callable[[Any], Any]) -> Any:
    """fn applied to every instance of `kind` in value, recursively through lists, tuples and dicts."""
    if isinstance(value, kind):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_leaves(v, kind, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_leaves(v, kind, fn) for v in value)
    return value


def _pack(value: Any) -> Any:
    """Tensors (detached, CPU) as numpy arrays."""
    return _map_leaves(value, torch.Tensor, lambda t: t.detach().cpu().numpy())


def _unpack(value: Any) -> Any:
    """The inverse of _pack."""
    return _map_leaves(value, np.ndarray, torch.from_numpy)


def _send(stream: IO[bytes], message: Any) -> None:
    """Pickle a message straight into the pipe (no whole-message buffer: each array is written as it is)."""
    pickle.dump(_pack(message), stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    """The next message from the pipe, read as it is unpickled (EOFError when the other process closed it, also
    in the middle of a message)."""
    try:
        return _unpack(pickle.load(stream))
    except (EOFError, pickle.UnpicklingError):
        raise EOFError("the other process closed the pipe") from None


def serve(incoming: IO[bytes], outgoing: IO[bytes]) -> None:
    """A worker's loop: first its TaskLearner, then (parameter values, tasks, meta-batch size) in and each task's
    result out; None (or the parent's exit) stops it."""
    retain_freed_memory()                                  # as in the parent (bench/execution/allocator.py)
    torch.set_num_threads(1)
    parts: TaskLearner = _receive(incoming)
    for p in parts.parameters:
        p.requires_grad_(True)
    _send(outgoing, "ready")
    while True:
        try:
            message = _receive(incoming)
        except EOFError:
            return
        if message is None:
            return
        values, tasks, batch = message
        try:
            with torch.no_grad():
                for p, v in zip(parts.parameters, values):
                    p.copy_(v)
            _send(outgoing, ("ok", [task_meta_gradient(parts, *task, batch) for task in tasks]))
        except Exception:                                   # the parent raises it with this traceback
            _send(outgoing, ("error", traceback.format_exc()))


def _ended(pid: int, code: int) -> str:
    """One line on a task process that ended without an answer: the signal that killed it, or its exit code."""
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        hint = " (the out-of-memory killer sends it when memory runs out)" if -code == signal.SIGKILL else ""
        return f"task process {pid} was killed by {name}{hint}; the cell resumes from its checkpoint when run again"
    return (f"task process {pid} exited with code {code} without an answer (its messages, if any, are on standard "
            "error); the cell resumes from its checkpoint when run again")


def _worker_parts(learner: MetaLearner) -> TaskLearner:
    """A TaskLearner with the learner's structure on its own tensors (their values arrive each step)."""
    parts = TaskLearner.of(learner)
    clones = {id(p): p.detach().clone() for p in parts.parameters}
    lrs = parts.lrs if isinstance(parts.lrs, float) else {n: clones[id(v)] for n, v in parts.lrs.items()}
    return TaskLearner(parts.spec, parts.reg, parts.support_ops, parts.query_ops,
                       {n: clones[id(v)] for n, v in parts.adapted.items()},
                       {n: clones[id(v)] for n, v in parts.meta_only.items()}, lrs,
                       [clones[id(p)] for p in parts.parameters], parts.first_order)


class TaskProcessPool:
    """`processes` processes for the per-task path (this one and processes - 1 spawned workers), one intra-op
    thread each while a meta-batch runs; close() (or the with-block's end) stops the workers."""

    def __init__(self, learner: MetaLearner, processes: int):
        if processes < 2:
            raise ValueError(f"a task-process pool needs at least 2 processes, not {processes}")
        self.processes = processes
        parts = _worker_parts(learner)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "bench.execution.task_worker"]
        self._workers = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
                         for _ in range(processes - 1)]
        for worker in self._workers:
            self._post(worker, parts)
        for worker in self._workers:                        # started (imports done) before the first step
            self._result(worker)

    def _post(self, worker: subprocess.Popen, message: Any) -> None:
        """Send the worker a message; a one-line RuntimeError if it has already ended."""
        try:
            _send(worker.stdin, message)
        except BrokenPipeError:
            self.close()
            raise RuntimeError(_ended(worker.pid, worker.wait())) from None

    def _result(self, worker: subprocess.Popen) -> Any:
        """The worker's next message; a RuntimeError with its traceback if it failed or exited."""
        try:
            message = _receive(worker.stdout)
        except EOFError:
            self.close()
            raise RuntimeError(_ended(worker.pid, worker.wait())) from None
        if isinstance(message, tuple) and message[0] == "error":
            self.close()
            raise RuntimeError(f"a task process failed:\n{message[1]}")
        return message

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (for memory accounting)."""
        return [w.pid for w in self._workers]

    def meta_gradients(self, learner: MetaLearner, ep: Episodes) -> TaskResult:
        """The per-task path's (mean loss, accuracy per task, summed gradients), the tasks spread over the
        processes in contiguous shares; the same numbers as that path at one thread."""
        tasks = task_inputs(learner, ep)
        batch = len(tasks)
        shares = np.array_split(np.arange(batch), min(self.processes, batch))
        values = [p.detach() for p in learner.parameters()]
        for worker, share in zip(self._workers, shares[1:]):
            self._post(worker, (values, [tasks[b] for b in share], batch))
        # this process's share in its own storage, so that the workers' (views of the meta-batch's tensors) go
        own = [_map_leaves(tasks[b], torch.Tensor, torch.clone) for b in shares[0]]
        del tasks
        try:
            with intra_op_threads(1):
                parts = TaskLearner.of(learner)
                results = [task_meta_gradient(parts, *task, batch) for task in own]
        except BaseException:           # the workers' answers to this step would be read as the next one's
            self.close()
            raise
        for worker, _ in zip(list(self._workers), shares[1:]):
            results.extend(self._result(worker)[1])
        return sum_task_results(results)

    def close(self) -> None:
        """Stop the workers (waits a few seconds, then terminates any still running)."""
        for worker in self._workers:
            try:
                _send(worker.stdin, None)
                worker.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        for worker in self._workers:
            try:
                worker.wait(timeout=5)
            except subprocess.TimeoutExpired:
                worker.kill()
            worker.stdout.close()
        self._workers = []

    def __enter__(self) -> TaskProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
