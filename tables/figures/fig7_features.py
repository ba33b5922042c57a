"""Figure 7 (appendix C): stochastic features. For one test image, a trained meta-dropout model's block-l
activations (ReLU outputs) on the deterministic path, softplus(mu), beside several stochastic ones,
softplus(mu + eps), channel by channel: Omniglot layer 1 and miniImageNet layer 2 in the paper."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from bench.data.bank import ImageBank
from bench.core.learner import MetaLearner
from tables.figures.trained import load_trained, one_sample_noise, tapped_forward
from tables.figures.context import FigureContext, caption, draw_montage, find_result, no_result

VERSION = 1


def stochastic_activations(learner: MetaLearner, bank: ImageBank, layer: int, samples: int, channels: int,
                           batch: int, seed: int) -> dict[str, np.ndarray]:
    """The first of `batch` random images of the bank (the batch sets batch norm's statistics): its pixels, and
    for its `channels` most active channels (deterministic path) the deterministic activation [C, H, W] and
    `samples` stochastic ones [S, C, H, W]."""
    generator = torch.Generator(device=bank.device).manual_seed(seed)
    c = torch.randint(0, bank.n_classes, (batch,), generator=generator, device=bank.device)
    i = torch.randint(0, bank.n_per_class, (batch,), generator=generator, device=bank.device)
    images = bank.images[c, i]
    x = bank.to_float(images, learner.dtype)
    params = {n: v.detach() for n, v in {**learner.adapted, **learner.meta_only}.items()}
    deterministic = tapped_forward(learner, params, x, None)[f"a{layer}"][0]
    top = deterministic.flatten(1).mean(1).argsort(descending=True)[:channels]
    noise_generator = torch.Generator(device=learner.device).manual_seed(seed)
    stochastic = [tapped_forward(learner, params, x, one_sample_noise(learner, batch, noise_generator))[f"a{layer}"][0]
                  for _ in range(samples)]
    return {"input": (images[0].float() / 255).cpu().numpy(), "channels": top.cpu().numpy(),
            "deterministic": deterministic[top].float().cpu().numpy(),
            "stochastic": torch.stack(stochastic)[:, top].float().cpu().numpy()}


def _panel_data(fig_def: dict, panel: dict, result: dict, ctx: FigureContext) -> dict[str, np.ndarray]:
    key = {"figure": "fig7", "version": VERSION, "cell": result["name"], "panel": panel,
           "settings": {k: fig_def[k] for k in ("samples", "channels", "batch", "seed")}}

    def compute() -> dict[str, np.ndarray]:
        experiment = load_trained(result, ctx.store.checkpoint_path(result["name"]), ctx.data_root, ctx.device)
        return stochastic_activations(experiment.learner, experiment.test_bank, panel["layer"], fig_def["samples"],
                                      fig_def["channels"], fig_def["batch"], fig_def["seed"])

    return ctx.cached(key, compute)


def render(fig_def: dict, results: list[dict], ctx: FigureContext) -> Figure:
    """Figure 7: per panel, the input image and a grid (rows: channels; columns: deterministic, then samples)."""
    panels = fig_def["panels"]
    found = [find_result(results, p["row"], p["column"]) for p in panels]
    data = [_panel_data(fig_def, p, r, ctx) if r else None for p, r in zip(panels, found)]
    channels = max([len(d["channels"]) for d in data if d is not None] or [fig_def["channels"]])
    tile = 4.6 / (fig_def["samples"] + 1)                            # inches per activation map
    fig = Figure(figsize=(6.2 * len(panels), tile * channels + 2.0), layout="constrained")
    axes = fig.subplots(1, 2 * len(panels), squeeze=False, width_ratios=[1, 4] * len(panels))[0]
    for k, (panel, panel_data) in enumerate(zip(panels, data)):
        _draw(fig, axes[2 * k], axes[2 * k + 1], panel, panel_data)
    caption(fig, fig_def, fig_def["caption"])
    return fig


def _draw(fig: Figure, image_ax, grid_ax, panel: dict, data: dict | None) -> None:
    grid_ax.set_title(panel["title"], fontsize=10)
    grid_ax.set_xlabel(f"layer {panel['layer']} activation (ReLU output)", fontsize=8)
    grid_ax.set_ylabel("channel (most active first)", fontsize=8)
    image_ax.set_xticks([])
    image_ax.set_yticks([])
    image_ax.set_xlabel("input image", fontsize=8)
    image_ax.set_ylabel("test split", fontsize=8)
    if data is None:
        no_result(grid_ax, panel["title"])
        grid_ax.legend(handles=[], title="no result yet", fontsize=7)
        return
    image = data["input"]
    grey = image.shape[0] == 1
    image_ax.imshow(image[0] if grey else image.transpose(1, 2, 0), cmap="gray_r" if grey else None, vmin=0, vmax=1)
    scale = np.maximum(data["deterministic"].max(axis=(1, 2)), 1e-12)           # per channel
    rows = [[data["deterministic"][c] / scale[c]] + [s[c] / scale[c] for s in data["stochastic"]]
            for c in range(len(data["channels"]))]
    samples = len(data["stochastic"])
    mappable = draw_montage(grid_ax, rows, row_labels=[f"ch {int(c)}" for c in data["channels"]],
                            col_labels=["softplus(μ)"] + [f"sample {s + 1}" for s in range(samples)],
                            col_kinds=["deterministic"] + ["stochastic"] * samples, cmap="viridis",
                            kind_labels={"deterministic": r"deterministic: $f \circ$ softplus($\mu$)",
                                         "stochastic": r"stochastic: $f \circ$ softplus($\mu + \epsilon$)"})
    fig.colorbar(mappable, ax=grid_ax, fraction=0.03, label="activation / channel's deterministic max")

