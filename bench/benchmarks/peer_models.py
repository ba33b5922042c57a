"""The same meta-training step written the way the generic MAML libraries run it, for bench/benchmarks/peers.py: conv4
(with meta-dropout optionally) as a torch.nn.Module of stock ops, and one meta-gradient per task with a backward each,
through `higher`, learn2learn or a plain torch.func loop. Parameters and noise come from a suite learner, so the
meta-gradients can be compared with the suite's."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

from bench.core.backbone import N_BLOCKS, BackboneSpec
from bench.data.episodes import Episodes
from bench.core.learner import MetaLearner

Noise = list[dict[str, torch.Tensor]]          # per inner step: tensors [B, S=1, ...] as the suite draws them


class PeerConv4(torch.nn.Module):
    """theta as nn.Parameters; the meta-only tensors (batch-norm shift, phi) are passed in, so the inner loop of
    every library adapts theta only, as the suite does."""

    def __init__(self, spec: BackboneSpec, theta: dict[str, torch.Tensor], meta_dropout: bool):
        super().__init__()
        self.spec, self.meta_dropout = spec, meta_dropout
        self.theta = torch.nn.ParameterDict({n.replace(".", "_"): torch.nn.Parameter(v.detach().clone())
                                             for n, v in theta.items()})

    def forward(self, x: torch.Tensor, meta: dict[str, torch.Tensor],
                noise: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits; noise (one task's, [n, ...]) makes it the stochastic support forward."""
        t, h = self.theta, x
        for l in range(1, N_BLOCKS + 1):
            f = F.conv2d(h, t[f"conv{l}_weight"], t[f"conv{l}_bias"], padding=1)
            if self.meta_dropout:
                a = F.conv2d(h, meta[f"phi.conv{l}.weight"], meta[f"phi.conv{l}.bias"], padding=1)
                f = f * F.softplus(a if noise is None else a + noise[f"eps{l}"])
            beta = meta[f"bn{l}.beta"]
            h = F.max_pool2d(F.relu(F.batch_norm(f, None, None, torch.ones_like(beta), beta, training=True,
                                                 eps=self.spec.bn_eps)), 2)
        features = h.flatten(1)
        logits = F.linear(features, t["head_weight"], t["head_bias"])
        if self.meta_dropout and noise is not None:
            sigma = F.softplus(features @ meta["phi.head.weight"] + meta["phi.head.bias"])
            logits = logits + sigma.unsqueeze(-1) * noise["eps_logits"]
        return logits


def _task_noise(noise: Noise, b: int, k: int) -> dict[str, torch.Tensor] | None:
    return {n: v[b, 0] for n, v in noise[k].items()} if noise and noise[k] else None


def _per_task(ep: Episodes, task_loss: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """Backward of each task's query loss / B as soon as it is computed (one task's graph alive at a time)."""
    batch, total = ep.x_support.shape[0], 0.0
    for b in range(batch):
        loss = task_loss(b) / batch
        loss.backward()
        total += loss.detach()
    return total


def _higher(model: PeerConv4, meta: dict, ep: Episodes, noise: Noise, inner_lr: float, steps: int) -> torch.Tensor:
    import higher
    inner = torch.optim.SGD(model.parameters(), lr=inner_lr)

    def task_loss(b: int) -> torch.Tensor:
        with higher.innerloop_ctx(model, inner, copy_initial_weights=False) as (fmodel, diffopt):
            for k in range(steps):
                diffopt.step(F.cross_entropy(fmodel(ep.x_support[b], meta, _task_noise(noise, b, k)),
                                             ep.y_support[b]))
            return F.cross_entropy(fmodel(ep.x_query[b], meta), ep.y_query[b])
    return _per_task(ep, task_loss)


def _learn2learn(model: PeerConv4, meta: dict, ep: Episodes, noise: Noise, inner_lr: float,
                 steps: int) -> torch.Tensor:
    import learn2learn
    maml = learn2learn.algorithms.MAML(model, lr=inner_lr, first_order=False)

    def task_loss(b: int) -> torch.Tensor:
        learner = maml.clone()
        for k in range(steps):
            learner.adapt(F.cross_entropy(learner(ep.x_support[b], meta, _task_noise(noise, b, k)), ep.y_support[b]))
        return F.cross_entropy(learner(ep.x_query[b], meta), ep.y_query[b])
    return _per_task(ep, task_loss)


def _torch_func(model: PeerConv4, meta: dict, ep: Episodes, noise: Noise, inner_lr: float,
                steps: int) -> torch.Tensor:
    def task_loss(b: int) -> torch.Tensor:
        params = dict(model.named_parameters())
        for k in range(steps):
            logits = functional_call(model, params, (ep.x_support[b], meta, _task_noise(noise, b, k)))
            grads = torch.autograd.grad(F.cross_entropy(logits, ep.y_support[b]), list(params.values()),
                                        create_graph=True)
            params = {n: p - inner_lr * g for (n, p), g in zip(params.items(), grads)}
        return F.cross_entropy(functional_call(model, params, (ep.x_query[b], meta)), ep.y_query[b])
    return _per_task(ep, task_loss)


PEERS: dict[str, tuple[str | None, Callable]] = {     # name -> (module it needs, per-task meta-gradient loop)
    "higher": ("higher", _higher),
    "learn2learn": ("learn2learn", _learn2learn),
    "torch.func loop": (None, _torch_func),
}
# How to get each peer's module: the peers extra installs higher; learn2learn cannot be installed beside numpy 2.
INSTALL = {"higher": "pip install -e '.[peers]'",
           "learn2learn": "it needs numpy < 2 and, on Python >= 3.11, a manual build: install it in a separate "
                          "environment as docs/speed.md describes"}


def not_installed(module: str) -> str:
    """'<module> is not installed (how to get it)'."""
    return f"{module} is not installed ({INSTALL[module]})"


class PeerStep:
    """One peer's meta-training step from a suite learner's initial state: its own parameter copies and Adam;
    step(episodes, noise) -> loss, with the meta-gradients clipped to [-3, 3] as the suite does."""

    def __init__(self, name: str, learner: MetaLearner, meta_lr: float):
        self.loop = PEERS[name][1]
        self.spec, self.reg = learner.spec, learner.reg
        self.inner_lr, self.steps = learner.config.inner_lr, learner.config.inner_steps
        self.model = PeerConv4(learner.spec, learner.adapted, meta_dropout=learner.reg.name == "meta_dropout")
        self.meta = {n: v.detach().clone().requires_grad_(True) for n, v in learner.meta_only.items()}
        self.optimizer = torch.optim.Adam([*self.model.parameters(), *self.meta.values()], lr=meta_lr)

    def named_gradients(self) -> dict[str, torch.Tensor]:
        """The last step's gradients under the suite's parameter names."""
        out = {f"theta/{n.replace('_', '.', 1)}": p.grad for n, p in self.model.theta.items()}
        out.update({f"meta/{n}": v.grad for n, v in self.meta.items()})
        return out

    def gradients(self, ep: Episodes, noise: Noise) -> torch.Tensor:
        """Zero the gradients and accumulate this meta-batch's; returns the meta-loss."""
        self.optimizer.zero_grad(set_to_none=False)
        return self.loop(self.model, self.meta, ep, noise, self.inner_lr, self.steps)

    def __call__(self, ep: Episodes, noise: Noise) -> torch.Tensor:
        loss = self.gradients(ep, noise)
        for p in [*self.model.parameters(), *self.meta.values()]:
            p.grad.clamp_(-3.0, 3.0)
        self.optimizer.step()
        return loss
