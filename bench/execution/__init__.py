"""How a step runs fast: the kernel plan per device and path, the samples-as-batch meta-test, task processes, the allocator setting, CUDA graphs. Never imported by the core."""
