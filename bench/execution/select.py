"""The one place that picks how a learner's work runs on its device: the CPU executor (task processes, the samples
as one batch at meta-test), a CUDA graph on a GPU, or the core's own computation."""
from __future__ import annotations

from bench.core.executor import Executor
from bench.core.learner import MetaLearner
from bench.execution.cpu import CpuExecutor
from bench.execution.cuda_graph import CudaExecutor, GraphExecutor, use_graph


def executor_for(learner: MetaLearner, cuda_graph: str = "auto") -> Executor:
    """The fastest executor for the learner's device (cuda_graph auto | on | off: replay the training step as a
    CUDA graph; auto: on a GPU)."""
    device = learner.device
    if use_graph(cuda_graph, device):
        return GraphExecutor()
    if device.type == "cuda":
        return CudaExecutor()
    if device.type == "cpu":
        return CpuExecutor()
    return Executor()
