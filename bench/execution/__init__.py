"""How a step runs fast on a device: the CPU executor (task processes, the meta-test's samples as one batch), CUDA
graphs, the allocator setting; executor_for picks one. Never imported by the core."""
from bench.execution.select import executor_for

__all__ = ["executor_for"]
