"""Figure 4 (appendix B, Eqs. 9-12): a task's decision boundary in the last latent feature space after the last
inner step. Two classes c1, c2 give the binary classifier w = w_c1 - w_c2, b = b_c1 - b_c2 of the adapted head;
x = H^(L) w / ||w|| (Eq. 10), y = a 1-D t-SNE of what is left of H^(L) (Eq. 11), the boundary is the vertical line
x = -b / ||w|| (Eq. 12). Drawn: the support examples, S perturbed versions of each (the regularizer's noise, which
is the point of the figure) and the query examples."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.manifold import TSNE

from bench.data.episodes import EpisodeSampler, Episodes
from bench.core.learner import MetaLearner
from tables.figures.trained import load_trained, one_sample_noise, restricted, tapped_forward
from tables.figures.context import FigureContext, caption, find_result, no_result

VERSION = 1                        # bump when the computed data changes (figure caches are keyed by it)
KINDS = ("support", "perturbed", "query")
CLASS_COLORS = ("firebrick", "royalblue")
SHOT_MARKERS = ("o", "^", "s", "D", "v")


@dataclass
class BoundaryPanel:
    """One panel's points (x, y, kind index into KINDS, class 0 = c1 / 1 = c2, support index or -1), the boundary's
    x, and for each point the adapted model's own logit gap (logit c1 - logit c2) from its forward."""

    x: np.ndarray
    y: np.ndarray
    kind: np.ndarray
    label: np.ndarray
    shot: np.ndarray
    boundary: float
    logit_gap: np.ndarray

    def to_arrays(self) -> dict[str, np.ndarray]:
        """For the figure cache (numpy arrays only)."""
        return {**{k: v for k, v in vars(self).items() if k != "boundary"}, "boundary": np.asarray(self.boundary)}

    @classmethod
    def from_arrays(cls, data: dict[str, np.ndarray]) -> "BoundaryPanel":
        """Inverse of to_arrays."""
        return cls(**{**data, "boundary": float(data["boundary"])})


def _points(learner: MetaLearner, params: dict, x: torch.Tensor, noise: dict | None,
            c1: int, c2: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(features H^(L), logit gap c1 - c2) of one forward; logit noise zeroed (it perturbs no latent feature)."""
    if noise and "eps_logits" in noise:
        noise = {**noise, "eps_logits": torch.zeros_like(noise["eps_logits"])}
    seen = tapped_forward(learner, params, x, noise)
    return seen["features"], seen["logits"][:, c1] - seen["logits"][:, c2]


def boundary_panel(learner: MetaLearner, episode: Episodes, samples: int, seed: int, c1: int = 0, c2: int = 1,
                   sample_chunk: int | None = None) -> BoundaryPanel:
    """Adapt on the episode's (single) task with the learner's meta-test MC samples, then project the support, its
    `samples` perturbed versions and the query of classes c1, c2 as in Eqs. 10-12 (t-SNE seeded by `seed`)."""
    xs, ys, xq, yq = (t[:1] for t in (episode.x_support, episode.y_support, episode.x_query, episode.y_query))
    with torch.no_grad():
        adapted = learner.adapt(xs, ys, learner.config.mc_test, first_order=True, sample_chunk=sample_chunk)
    params = {**{n: v[0].detach() for n, v in adapted.items()}, **{n: v.detach() for n, v in learner.meta_only.items()}}
    generator = torch.Generator(device=learner.device).manual_seed(seed)
    features, gaps, kinds, labels, shots = [], [], [], [], []

    def add(x: torch.Tensor, y: torch.Tensor, noise: dict | None, kind: str) -> None:
        h, gap = _points(learner, params, x, noise, c1, c2)
        keep = (y == c1) | (y == c2)
        features.append(h[keep])
        gaps.append(gap[keep])
        kinds.append(np.full(int(keep.sum()), KINDS.index(kind)))
        labels.append((y[keep] == c2).long().cpu().numpy())
        rank = torch.stack([(y[:i] == y[i]).sum() for i in range(len(y))])     # i-th support example of its class
        shots.append(rank[keep].cpu().numpy() if kind != "query" else np.full(int(keep.sum()), -1))

    add(xs[0], ys[0], None, "support")
    if learner.reg.draws_noise:
        for _ in range(samples):
            add(xs[0], ys[0], one_sample_noise(learner, xs.shape[1], generator), "perturbed")
    add(xq[0], yq[0], None, "query")
    h = torch.cat(features).double().cpu()
    w = (params["head.weight"][c1] - params["head.weight"][c2]).double().cpu()
    b = float(params["head.bias"][c1] - params["head.bias"][c2])
    unit = w / w.norm()
    x = h @ unit                                                                     # Eq. 10
    residual = (h - x[:, None] * unit).numpy()                                       # Eq. 11's argument
    perplexity = float(min(30.0, max(2.0, (len(residual) - 1) / 3)))
    y = TSNE(n_components=1, perplexity=perplexity, init="pca", method="exact",
             random_state=seed).fit_transform(residual)[:, 0]
    return BoundaryPanel(x.numpy(), y, np.concatenate(kinds), np.concatenate(labels), np.concatenate(shots),
                         -b / float(w.norm()), torch.cat(gaps).double().cpu().numpy())   # Eq. 12


def draw_panel(ax: Axes, panel: BoundaryPanel | None, title: str) -> None:
    """The published look: classes by colour, support examples by marker, perturbed ones faded, queries as stars,
    the boundary as a vertical line; labelled axes and a legend in every case."""
    if panel is None:
        no_result(ax, title)
    else:
        for c in (0, 1):
            color = CLASS_COLORS[c]
            for s in np.unique(panel.shot[(panel.label == c) & (panel.shot >= 0)]):
                marker = SHOT_MARKERS[int(s) % len(SHOT_MARKERS)]
                for kind, style in (("perturbed", dict(s=60, alpha=0.35, linewidths=0.5, zorder=1)),
                                    ("support", dict(s=160, linewidths=1.2, zorder=4))):
                    pick = (panel.label == c) & (panel.shot == s) & (panel.kind == KINDS.index(kind))
                    ax.scatter(panel.x[pick], panel.y[pick], marker=marker, c=color, edgecolors="black", **style)
            pick = (panel.label == c) & (panel.kind == KINDS.index("query"))
            ax.scatter(panel.x[pick], panel.y[pick], marker="*", s=110, c=color, edgecolors="black", linewidths=0.6,
                       zorder=3)
        ax.axvline(panel.boundary, color="black", linewidth=1.2)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(r"projection on $(w_{c_1} - w_{c_2}) / \|w_{c_1} - w_{c_2}\|$ (Eq. 10)", fontsize=8)
    ax.set_ylabel("1-D t-SNE of the rest of $H^{(L)}$ (Eq. 11)", fontsize=8)
    ax.tick_params(labelsize=7)
    handles = [Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="black",
                      markersize=9, label="support (train)"),
               Line2D([], [], marker="o", linestyle="", markerfacecolor="grey", alpha=0.4, markeredgecolor="black",
                      markersize=7, label="perturbed support"),
               Line2D([], [], marker="*", linestyle="", markerfacecolor="none", markeredgecolor="black",
                      markersize=10, label="query (test)"),
               Line2D([], [], color="black", label="decision boundary (Eq. 12)")]
    ax.legend(handles=handles, fontsize=7, loc="lower left")


def panel_data(fig_def: dict, result: dict, ctx: FigureContext) -> BoundaryPanel:
    """One panel computed from its trained cell (cached by cell, settings and VERSION)."""
    episode_def = fig_def.get("episode", {})
    key = {"figure": "fig4", "version": VERSION, "cell": result["name"], "episode": episode_def,
           "samples": fig_def["perturbed_samples"], "seed": fig_def["seed"]}

    def compute() -> dict[str, np.ndarray]:
        experiment = load_trained(result, ctx.store.checkpoint_path(result["name"]), ctx.data_root, ctx.device)
        p = experiment.protocol
        ways = episode_def.get("ways") or p.ways
        learner = restricted(experiment.learner, ways)
        sampler = EpisodeSampler(experiment.test_bank, ways, episode_def.get("shots") or p.shots,
                                 episode_def.get("queries") or p.queries, seed=fig_def["seed"], dtype=learner.dtype)
        learner.noise_generator.manual_seed(fig_def["seed"])
        data = boundary_panel(learner, sampler.sample(1), fig_def["perturbed_samples"], fig_def["seed"],
                              sample_chunk=p.test_sample_chunk)
        return data.to_arrays()

    return BoundaryPanel.from_arrays(ctx.cached(key, compute))


def render(fig_def: dict, results: list[dict], ctx: FigureContext) -> Figure:
    """Figure 4: one panel per entry of the definition's `panels` (row, column, title)."""
    panels = fig_def["panels"]
    fig = Figure(figsize=(4.6 * len(panels), 4.4), layout="constrained")
    for ax, panel in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        result = find_result(results, panel["row"], panel["column"])
        draw_panel(ax, panel_data(fig_def, result, ctx) if result else None, panel["title"])
    caption(fig, fig_def, fig_def["caption"])
    return fig

