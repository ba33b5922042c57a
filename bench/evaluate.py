"""Meta-testing (Algorithm 2): adapt with S Monte-Carlo samples, score the query set deterministically,
optionally under FGSM attack; episodes are batched on the device."""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import vmap
from tqdm.auto import tqdm

from bench.attacks import fgsm
from bench.episode_noise import EpisodeNoise
from bench.episodes import EpisodeSampler
from bench.failures import NonFinite
from bench.inner_loop import query_logits
from bench.learner import MetaLearner


def confidence_interval(accuracies: np.ndarray) -> tuple[float, float, float]:
    """(mean, 95% CI half-width, std) with CI = 1.96 * std / sqrt(n); std is the population std (ddof=0), as
    in the authors' release."""
    std = float(np.std(accuracies))
    return float(np.mean(accuracies)), 1.96 * std / math.sqrt(len(accuracies)), std


def summarize(accuracies: list[float]) -> dict:
    """Per-episode accuracies (percent) with their mean, 95% CI and std."""
    mean, ci, std = confidence_interval(np.asarray(accuracies))
    return {"accuracies": accuracies, "mean": mean, "ci95": ci, "std": std, "n_episodes": len(accuracies),
            "ci_rule": "1.96 * population std / sqrt(n)"}


def _attacked_accuracy(learner: MetaLearner, adapted: dict, x: torch.Tensor, y: torch.Tensor, epsilon: float,
                       lo: torch.Tensor | None, hi: torch.Tensor | None) -> torch.Tensor:
    """Query accuracy per task [B] after an FGSM attack of size epsilon against the adapted parameters."""
    def one_task(params: dict, xq: torch.Tensor, yq: torch.Tensor) -> torch.Tensor:
        logits_at = partial(query_logits, learner.spec, learner.reg, params, learner.meta_only)
        x_adv = fgsm(lambda inputs: F.cross_entropy(logits_at(inputs), yq), xq, epsilon, lo, hi) if epsilon else xq
        logits = logits_at(x_adv)
        return (logits.argmax(-1) == yq).to(learner.dtype).mean(), torch.isfinite(logits).all()
    accuracy, finite = vmap(one_task)(adapted, x, y)
    if not finite.all():
        raise NonFinite(f"meta-test logits under an FGSM attack of size {epsilon} are not finite", "test")
    return accuracy


def _require_finite(logits: torch.Tensor, first: int, count: int) -> None:
    """A NaN or infinite logit makes the argmax (and the accuracy) meaningless: stop with NonFinite."""
    if not torch.isfinite(logits).all():
        raise NonFinite(f"meta-test logits are not finite in episodes {first}-{first + count - 1}", "test")


def meta_test(learner: MetaLearner, sampler: EpisodeSampler, episodes: int = 1000, batch: int = 25,
              samples: int | None = None, attack_epsilons: list[float] | None = None,
              value_range: tuple[torch.Tensor, torch.Tensor] | None = None, progress: bool = True,
              sample_chunk: int | None = None, seed: int = 0) -> dict:
    """Accuracy (percent) on `episodes` test tasks: every per-episode value, mean and 95% CI; with
    attack_epsilons, also the accuracy under FGSM of each size ("robustness"). Each episode's noise comes from
    its own generator (seed, episode index), so neither `batch` nor sample_chunk (how many of the S samples are
    forwarded at once: memory) changes the result."""
    samples = learner.config.mc_test if samples is None else samples
    clean: list[float] = []
    attacked: list[list[float]] = [[] for _ in attack_epsilons or []]
    lo, hi = value_range if value_range is not None else (None, None)
    bar = tqdm(total=episodes, desc="meta-test", disable=not progress, dynamic_ncols=True, leave=False)
    with torch.no_grad():
        while len(clean) < episodes:
            b = min(batch, episodes - len(clean))
            ep = sampler.sample(b)
            noise = EpisodeNoise(learner, list(range(len(clean), len(clean) + b)), ep.x_support.shape[1], seed)
            adapted = learner.adapt(ep.x_support, ep.y_support, samples, first_order=True,
                                    sample_chunk=sample_chunk, noise_fn=noise)
            logits = learner.query_logits(adapted, ep.x_query)
            _require_finite(logits, len(clean), b)
            clean += (100 * (logits.argmax(-1) == ep.y_query).double().mean(-1)).tolist()
            for out, eps in zip(attacked, attack_epsilons or []):
                out += (100 * _attacked_accuracy(learner, adapted, ep.x_query, ep.y_query, eps, lo, hi)
                        .double()).tolist()
            bar.update(b)
    bar.close()
    result = summarize(clean)
    if attack_epsilons:
        per_eps = [summarize(a) for a in attacked]
        result["robustness"] = {"epsilons": list(attack_epsilons), "mean": [r["mean"] for r in per_eps],
                                "ci95": [r["ci95"] for r in per_eps], "accuracies": attacked}
    return result
