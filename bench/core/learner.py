"""Meta-learners: MAML and Meta-SGD over conv4 with a regularizer; the meta-objective of Eq. 4."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from bench.core.backbone import BackboneSpec, init_backbone
from bench.core.inner_loop import NoiseFn, adapt_reference, adapt_vectorized, batched_query_logits, query_logits
from bench.core.noise import EpisodeNoise
from bench.core.regularizer import Params, Regularizer
from bench.ops.dispatch import KernelPlan, select_ops, vmap_over_tasks_pays
from bench.util.errors import UserError

ALGORITHMS = ("maml", "metasgd")
EXECUTIONS = ("vectorized", "per_task", "reference")   # the same meta-gradient, computed three ways
ALPHA_INITS = ("constant", "uniform")   # Meta-SGD's alphas: all at inner_lr, or uniform in alpha_range (Li et al.)


@dataclass(frozen=True)
class LearnerConfig:
    """Inner-loop settings: algorithm, alpha, K steps, first-order flag, MC samples S (train / test)."""

    algorithm: str = "maml"
    inner_lr: float = 0.1
    inner_steps: int = 5
    first_order: bool = False
    mc_train: int = 1
    mc_test: int = 30
    execution: str = "auto"    # auto | vmap over tasks | a backward per task | the per-task loop with one backward
    alpha_init: str = "constant"                     # Meta-SGD only: see ALPHA_INITS
    alpha_range: tuple[float, float] = (0.005, 0.1)  # Meta-SGD only, alpha_init "uniform"

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise UserError(f"unknown learner '{self.algorithm}'; choose one of: {', '.join(ALGORITHMS)}")
        if self.execution not in ("auto", *EXECUTIONS):
            raise UserError(f"unknown execution '{self.execution}'; choose one of: auto, {', '.join(EXECUTIONS)}")
        if self.alpha_init not in ALPHA_INITS:
            raise UserError(f"unknown alpha_init '{self.alpha_init}'; choose one of: {', '.join(ALPHA_INITS)}")
        low, high = self.alpha_range
        if not 0 < low <= high:
            raise UserError(f"alpha_range {list(self.alpha_range)} must be [low, high] with 0 < low <= high")


class MetaLearner:
    """theta (adapted in the inner loop), meta-only parameters (phi, batch-norm shift), Meta-SGD's alphas; its
    config's execution 'auto' becomes the faster path on its device (resolve_execution)."""

    def __init__(self, spec: BackboneSpec, reg: Regularizer, config: LearnerConfig, seed: int,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 plan: KernelPlan = KernelPlan()):
        self.device = torch.device(device)
        self.spec, self.reg, self.dtype = spec, reg, dtype
        self.config = replace(config, execution=resolve_execution(config.execution, self.device))
        self.ops = select_ops(self.device, plan)    # the forward's operations (bench/ops/dispatch.py); paths that
        #                                             run outside vmap or first order derive theirs from its plan
        init_gen = torch.Generator().manual_seed(seed)
        theta, bn_meta = init_backbone(spec, init_gen, dtype)
        phi, reg_adapted = reg.init_params(spec, init_gen, dtype)
        self.adapted = self._leaves({**theta, **reg_adapted})
        self.meta_only = self._leaves({**bn_meta, **phi})
        self.inner_lrs = (self._leaves(initial_alphas(self.adapted, config, init_gen))
                          if config.algorithm == "metasgd" else {})
        self.noise_generator = torch.Generator(device=self.device)
        self.noise_generator.manual_seed(seed + 1)

    def _leaves(self, params: Params) -> Params:
        return {n: v.to(self.device).requires_grad_(True) for n, v in params.items()}

    def named_parameters(self) -> dict[str, torch.Tensor]:
        """Every meta-learned tensor under a unique name."""
        named = {f"theta/{n}": v for n, v in self.adapted.items()}
        named.update({f"meta/{n}": v for n, v in self.meta_only.items()})
        named.update({f"alpha/{n}": v for n, v in self.inner_lrs.items()})
        return named

    def parameters(self) -> list[torch.Tensor]:
        """Every meta-learned tensor, in a fixed order."""
        return list(self.named_parameters().values())

    def parameter_count(self) -> int:
        """Number of meta-learned scalars."""
        return sum(p.numel() for p in self.parameters())

    def lrs(self) -> Params | float:
        """alpha: a float for MAML, per-element tensors for Meta-SGD."""
        return self.inner_lrs if self.inner_lrs else self.config.inner_lr

    def noise_fn(self, n: int, batch: int) -> NoiseFn:
        """Draws step k's noise for B tasks of n support examples from the learner's generator (training)."""
        if not self.reg.draws_noise:
            return lambda k, start, stop: {}
        return lambda k, start, stop: self.reg.sample_noise(self.spec, n, (batch, stop - start),
                                                            self.noise_generator, self.device, self.dtype)

    def episode_noise(self, episodes: list[int], n_support: int, seed: int) -> EpisodeNoise:
        """Meta-test noise of these test episodes (each from its own generator: bench/core/noise.py)."""
        return EpisodeNoise(self.reg, self.spec, episodes, n_support, seed, self.device, self.dtype)

    def samples(self, requested: int) -> int:
        """Monte-Carlo samples per inner step: one for a regularizer that draws no noise (all would be equal)."""
        return requested if self.reg.draws_noise else 1

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        """One-hot targets of N ways (a comparison: no host synchronisation, unlike F.one_hot's checks)."""
        ways = torch.arange(self.spec.ways, device=labels.device)
        return (labels.unsqueeze(-1) == ways).to(self.dtype)

    def adapt(self, x_support: torch.Tensor, y_support: torch.Tensor, samples: int, vectorized: bool = True,
              first_order: bool | None = None, sample_chunk: int | None = None,
              noise_fn: NoiseFn | None = None) -> Params | list[Params]:
        """Run the K inner steps for a batch of tasks; parameters [B, ...] (vectorized) or a list (reference).
        noise_fn defaults to the learner's generator; sample_chunk (vectorized only) forwards at most that many
        Monte-Carlo samples at once."""
        targets = self.one_hot(y_support)
        first_order = self.config.first_order if first_order is None else first_order
        noise_fn = noise_fn or self.noise_fn(x_support.shape[1], x_support.shape[0])
        args = (self.spec, self.reg, self.ops, self.adapted, self.meta_only, self.lrs(), x_support, targets, noise_fn,
                self.samples(samples), self.config.inner_steps, first_order)
        return adapt_vectorized(*args, sample_chunk=sample_chunk) if vectorized else adapt_reference(*args)

    def query_logits(self, adapted: Params | list[Params], x_query: torch.Tensor) -> torch.Tensor:
        """Deterministic query logits [B, M, N] for what adapt() returned (Eq. 4)."""
        if isinstance(adapted, list):
            return torch.stack([query_logits(self.spec, self.reg, self.ops, a, self.meta_only, x)
                                for a, x in zip(adapted, x_query)])
        return batched_query_logits(self.spec, self.reg, self.ops, adapted, self.meta_only, x_query)

    def meta_loss(self, x_support: torch.Tensor, y_support: torch.Tensor, x_query: torch.Tensor,
                  y_query: torch.Tensor, vectorized: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 4 averaged over the meta-batch, and the query accuracy of each task (fraction); vectorized=False
        runs the per-task reference loop (one graph for the whole meta-batch)."""
        adapted = self.adapt(x_support, y_support, self.config.mc_train, vectorized)
        logits = self.query_logits(adapted, x_query)
        loss = F.cross_entropy(logits.flatten(0, 1), y_query.flatten())
        accuracy = (logits.argmax(-1) == y_query).to(self.dtype).mean(-1)
        return loss, accuracy

    def state_dict(self) -> dict[str, torch.Tensor]:
        """All meta-learned tensors (detached copies) and the noise generator state."""
        state = {n: v.detach().clone() for n, v in self.named_parameters().items()}
        state["rng/noise"] = self.noise_generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what state_dict() returned, in place."""
        with torch.no_grad():
            for name, value in self.named_parameters().items():
                value.copy_(state[name])
        self.noise_generator.set_state(state["rng/noise"])


def initial_alphas(adapted: Params, config: LearnerConfig, generator: torch.Generator) -> Params:
    """Meta-SGD's per-element alphas at the start: inner_lr everywhere, or uniform in alpha_range."""
    if config.alpha_init == "constant":
        return {n: torch.full_like(v, config.inner_lr) for n, v in adapted.items()}
    low, high = config.alpha_range
    return {n: torch.empty(v.shape, dtype=v.dtype).uniform_(low, high, generator=generator)
            for n, v in adapted.items()}


def resolve_execution(mode: str, device: torch.device | str) -> str:
    """'auto' -> vmap over tasks where it pays (a GPU), else a backward per task (bench/ops/dispatch.py decides);
    any other mode is kept."""
    if mode != "auto":
        return mode
    return "vectorized" if vmap_over_tasks_pays(device) else "per_task"
