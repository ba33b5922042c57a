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

from bench.core.attacks import fast_gradient
from bench.core.executor import Executor
from bench.core.inner_loop import query_logits
from bench.core.learner import MetaLearner
from bench.data.episodes import Episodes, EpisodeSampler, FixedEpisodes
from bench.data.pixels import PIXEL_UNITS, PixelSpace
from bench.util.failures import NonFinite


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


def _attacked_accuracy(learner: MetaLearner, adapted: dict, x: torch.Tensor, y: torch.Tensor, norm: str,
                       epsilon: float, space: PixelSpace | None) -> torch.Tensor:
    """Query accuracy per task [B] after a fast gradient attack of size epsilon in `norm` (pixel units, clamped to
    the pixel range) against the adapted parameters."""
    def one_task(params: dict, xq: torch.Tensor, yq: torch.Tensor) -> torch.Tensor:
        logits_at = partial(query_logits, learner.spec, learner.reg, learner.ops, params, learner.meta_only)
        loss_at = lambda inputs: F.cross_entropy(logits_at(inputs), yq)  # noqa: E731
        x_adv = fast_gradient(loss_at, xq, epsilon, norm, space) if epsilon else xq
        logits = logits_at(x_adv)
        return (logits.argmax(-1) == yq).to(learner.dtype).mean(), torch.isfinite(logits).all()
    accuracy, finite = vmap(one_task)(adapted, x, y)
    if not finite.all():
        raise NonFinite(f"meta-test logits under a {norm} attack of size {epsilon} are not finite", "test")
    return accuracy


def _require_finite(logits: torch.Tensor, first: int, count: int) -> None:
    """A NaN or infinite logit makes the argmax (and the accuracy) meaningless: stop with NonFinite."""
    if not torch.isfinite(logits).all():
        raise NonFinite(f"meta-test logits are not finite in episodes {first}-{first + count - 1}", "test")


def adapt_and_score(learner: MetaLearner, ep: Episodes, first: int, samples: int, sample_chunk: int | None,
                    seed: int, executor: Executor | None = None) -> tuple[dict, torch.Tensor]:
    """(adapted parameters, query logits) of test episodes first, first + 1, ... (Algorithm 2), each adapted with
    its own noise (bench/core/noise.py); NonFinite if a logit is not finite."""
    executor = executor or Executor()
    noise = learner.episode_noise(list(range(first, first + ep.x_support.shape[0])), ep.x_support.shape[1], seed)
    adapted = executor.adapt_for_test(learner, ep.x_support, ep.y_support, samples, sample_chunk, noise)
    logits = executor.test_query_logits(learner, adapted, ep.x_query)
    _require_finite(logits, first, ep.x_support.shape[0])
    return adapted, logits


def meta_test(learner: MetaLearner, sampler: EpisodeSampler | FixedEpisodes, episodes: int = 1000, batch: int = 25,
              samples: int | None = None, attacks: dict[str, list[float]] | None = None,
              pixel_space: PixelSpace | None = None, progress: bool = True,
              sample_chunk: int | None = None, seed: int = 0, executor: Executor | None = None) -> dict:
    """Accuracy (percent) on `episodes` test tasks: every per-episode value, mean and 95% CI; with attacks
    ({norm: sizes}, pixel units on the [0, 1] scale via pixel_space), also the accuracy under the fast gradient
    attack of each norm and size ("robustness"). Each episode's noise comes from its own generator (seed, episode
    index), so neither `batch` nor sample_chunk (how many of the S samples are forwarded at once: memory) changes
    the noise; the result is the same up to floating-point summation order (equal in float64; in float32 a
    near-tie argmax on a query may flip). The executor (default: the core's own computation) says how episodes
    are adapted."""
    executor = executor or Executor()
    samples = learner.config.mc_test if samples is None else samples
    clean: list[float] = []
    single_class = 0                    # episodes whose every query is predicted as one class (a collapsed model)
    pairs = [(norm, eps) for norm, sizes in (attacks or {}).items() for eps in sizes]
    attacked: list[list[float]] = [[] for _ in pairs]
    bar = tqdm(total=episodes, desc="meta-test", disable=not progress, dynamic_ncols=True, leave=False)
    with torch.no_grad():
        while len(clean) < episodes:
            b = min(batch, episodes - len(clean))
            ep = sampler.sample(b)
            adapted, logits = adapt_and_score(learner, ep, len(clean), samples, sample_chunk, seed, executor)
            predictions = logits.argmax(-1)
            clean += (100 * (predictions == ep.y_query).double().mean(-1)).tolist()
            single_class += int((predictions == predictions[:, :1]).all(-1).sum())
            for out, (norm, eps) in zip(attacked, pairs):
                out += (100 * _attacked_accuracy(learner, adapted, ep.x_query, ep.y_query, norm, eps, pixel_space)
                        .double()).tolist()
            bar.update(b)
    bar.close()
    result = {**summarize(clean), "single_class_episodes": single_class,
              "adaptation": executor.test_route(learner, samples)}
    if pairs:
        norms: dict[str, dict] = {}
        for (norm, eps), accuracies in zip(pairs, attacked):
            curve = norms.setdefault(norm, {"epsilons": [], "mean": [], "ci95": [], "accuracies": []})
            summary = summarize(accuracies)
            curve["epsilons"].append(eps)
            curve["mean"].append(summary["mean"])
            curve["ci95"].append(summary["ci95"])
            curve["accuracies"].append(accuracies)
        result["robustness"] = {"units": PIXEL_UNITS, "attack": "fast gradient method", "norms": norms}
    return result
