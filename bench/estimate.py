"""Rough time estimates for --dry-run and the no-GPU warning, scaled from measured reference steps."""
from __future__ import annotations

# Measured meta-dropout steps (REFERENCE.md): Omniglot 20-way 1-shot, B=8, 64 channels, 5 inner steps:
# about 62.5 ms on one H200 (vmap + CUDA graph) and about 6 s on 2 CPU cores. Other cells scale with
# the work of a step: images x pixels x channels^2 x inner steps.
REFERENCE_WORK = 8 * 20 * 16 * 28 * 28 * 64 ** 2 * 6
SECONDS_PER_REFERENCE_STEP = {"gpu": 0.0625, "cpu": 6.0}
TEST_COST_IN_STEPS = 0.15      # one test episode with S=30 samples, no second order, in meta-train steps / B
OVERHEAD_PER_STEP = {"gpu": 0.005, "cpu": 0.05}     # launch / Python cost of a step, whatever its size
OVERHEAD_PER_CELL = 1.0                             # building the learner, data, writing the result


def step_work(p: dict) -> float:
    """Relative work of one meta-train step of protocol p."""
    images = p["meta_batch"] * p["ways"] * (p["shots"] + p["queries"])
    return images * p["image_size"] ** 2 * p["channels"] ** 2 * (p["inner_steps"] + 1)


def cell_seconds(p: dict, kind: str) -> float:
    """Estimated seconds for a cell (training + meta-test) on 'gpu' or 'cpu'."""
    per_step = SECONDS_PER_REFERENCE_STEP[kind] * step_work(p) / REFERENCE_WORK + OVERHEAD_PER_STEP[kind]
    evaluations = 1 + len([i for i in p.get("eval_at", []) if i < p["iterations"]])    # learning-curve points
    test = per_step * TEST_COST_IN_STEPS * p["test_episodes"] * p["mc_test"] / p["meta_batch"] * evaluations
    return per_step * p["iterations"] + test + OVERHEAD_PER_CELL


def human(seconds: float) -> str:
    """'3.2 h', '12 min' or '40 s'."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
