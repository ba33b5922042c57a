"""A finished cell's meta-learner, loaded from the final checkpoint its run keeps (figures never retrain), and the
per-layer features of one forward (a regularizer wrapper that records what the backbone computes)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from bench.core import checkpoint
from bench.api import Experiment, build_experiment
from bench.core.backbone import forward
from bench.util.errors import UserError
from bench.core.regularizer import ForwardContext, Params, Regularizer, Wrapped
from bench.core.learner import MetaLearner
from bench.store.protocol import Protocol


def load_trained(result: dict, checkpoint_path: Path, data_root: str | None = None,
                 device: str = "cpu") -> Experiment:
    """The experiment of a finished cell (its result JSON) with the meta-learned parameters of its final
    checkpoint; a missing or unfinished checkpoint is a UserError saying how to get it."""
    config = result["config"]
    protocol = Protocol(**config["protocol"])
    if not checkpoint_path.exists():
        raise UserError(f"cell {result['name']} has no checkpoint at {checkpoint_path}; run its table again "
                        "(the finished cell's test is redone, its training resumes at the end)")
    experiment = build_experiment(protocol, config["learner"], config["regularizer"], config["hyper"],
                                  result["seed"], device=device, data_root=data_root)
    try:
        with checkpoint.resuming_from(checkpoint_path):
            state = checkpoint.load(checkpoint_path)
            experiment.learner.load_state_dict(state["learner"])
    except checkpoint.CheckpointUnusable as err:
        raise UserError(f"{err}: the figure cannot use it; delete it and run the cell's table again (its training "
                        "starts over)") from None
    if state["iteration"] != protocol.iterations:
        raise UserError(f"the checkpoint of cell {result['name']} is at iteration {state['iteration']} of "
                        f"{protocol.iterations}; finish the cell first")
    return experiment


def restricted(learner: MetaLearner, ways: int) -> MetaLearner:
    """The learner with its head (and Meta-SGD's head alphas) cut to the first `ways` classes, as the authors'
    release does to draw a 2-way task; the learner itself when `ways` is its own."""
    if ways == learner.spec.ways:
        return learner
    if not 2 <= ways <= learner.spec.ways:
        raise UserError(f"a {ways}-way task needs 2 to {learner.spec.ways} ways for this cell's head")
    out = MetaLearner(dataclasses.replace(learner.spec, ways=ways), learner.reg, learner.config, seed=0,
                      device=learner.device, dtype=learner.dtype)
    state = learner.state_dict()
    for name in ("theta/head.weight", "theta/head.bias", "alpha/head.weight", "alpha/head.bias"):
        if name in state:
            state[name] = state[name][:ways]
    out.load_state_dict(state)
    return out


class FeatureTap(Wrapped):
    """Wraps a regularizer, forwarding every hook, and records the block outputs `h{l}` (after pooling; h0 the
    input), the ReLU outputs `a{l}`, the flattened final `features` and the `logits` of the last forward."""

    needs_full_activation = True                       # it records the ReLU outputs before pooling

    def __init__(self, inner: Regularizer):
        super().__init__(inner)
        self.seen: dict[str, torch.Tensor] = {}

    def on_features(self, block: int, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        self.seen[f"h{block}"] = out = self.inner.on_features(block, h, ctx)
        return out

    def on_activation(self, block: int, h_in: torch.Tensor, a: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        self.seen[f"a{block}"] = out = self.inner.on_activation(block, h_in, a, ctx)
        return out

    def on_logits(self, features: torch.Tensor, logits: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        self.seen["features"] = features
        self.seen["logits"] = out = self.inner.on_logits(features, logits, ctx)
        return out


def tapped_forward(learner: MetaLearner, params: Params, x: torch.Tensor,
                   noise: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Everything FeatureTap records for one forward of x [n, C, H, W] with these parameters; noise None is the
    deterministic (query) path, a dict of one sample's noise the stochastic (support) path."""
    tap = FeatureTap(learner.reg)
    targets = torch.zeros(len(x), learner.spec.ways, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        forward(learner.spec, params, x, tap, ForwardContext(params, noise, targets, learner.ops))
    return tap.seen


def one_sample_noise(learner: MetaLearner, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One Monte-Carlo sample of the regularizer's noise for n examples (empty when it draws none)."""
    if not learner.reg.draws_noise:
        return {}
    noise = learner.reg.sample_noise(learner.spec, n, (1,), generator, learner.device, learner.dtype)
    return {k: v[0] for k, v in noise.items()}
