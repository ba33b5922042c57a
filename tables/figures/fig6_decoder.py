"""Figure 6 (appendix C): meta-dropout's perturbation seen at the input level. A small deconvolutional decoder
learns to reconstruct the input from the unperturbed (deterministic-path) layer-3 features of a trained
meta-dropout cell; applied to perturbed layer-3 features (noise drawn as in the inner loop), it shows what the
learned noise does to an image. Originals, reconstructions and perturbed reconstructions of test images."""
from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from bench.data.bank import ImageBank
from bench.core.learner import MetaLearner
from tables.figures.trained import load_trained, one_sample_noise, tapped_forward
from tables.figures.context import FigureContext, caption, draw_montage, find_result, no_result, preset_settings

VERSION = 1
LAYER = 3                          # the paper decodes the 3rd layer's features


class Decoder(nn.Module):
    """Features [n, C, s, s] -> pixels [n, C_in, H, W] in [0, 1]: three stride-2 transposed convs (x8), a
    bilinear resize to the image size, a 3x3 conv and a sigmoid."""

    def __init__(self, feature_channels: int, image_shape: tuple[int, int, int], width: int = 32):
        super().__init__()
        self.image_shape = image_shape
        self.up = nn.Sequential(
            nn.ConvTranspose2d(feature_channels, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU())
        self.out = nn.Conv2d(width, image_shape[0], 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Reconstructed pixels."""
        up = F.interpolate(self.up(h), size=self.image_shape[1:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.out(up))


def _params(learner: MetaLearner) -> dict[str, torch.Tensor]:
    return {n: v.detach() for n, v in {**learner.adapted, **learner.meta_only}.items()}


def layer_features(learner: MetaLearner, x: torch.Tensor, noise: dict | None = None) -> torch.Tensor:
    """The meta-learned model's layer-3 features h^(3) of a batch (deterministic path unless noise is given;
    batch norm uses this batch's statistics, as everywhere in the model)."""
    return tapped_forward(learner, _params(learner), x, noise)[f"h{LAYER}"].float()


def _batch(bank: ImageBank, size: int, generator: torch.Generator, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """(model inputs, pixels in [0, 1]) of `size` random images of the bank."""
    c = torch.randint(0, bank.n_classes, (size,), generator=generator, device=bank.device)
    i = torch.randint(0, bank.n_per_class, (size,), generator=generator, device=bank.device)
    images = bank.images[c, i]
    return bank.to_float(images, dtype), images.float() / 255


def feature_pool(learner: MetaLearner, bank: ImageBank, size: int, chunk: int, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer-3 features, pixels) of `size` random images, forwarded in batches of `chunk` (batch norm's batch)."""
    x, pixels = _batch(bank, size, generator, learner.dtype)
    return torch.cat([layer_features(learner, part) for part in x.split(chunk)]), pixels


def train_decoder(learner: MetaLearner, train: ImageBank, held_out: tuple[torch.Tensor, torch.Tensor], steps: int,
                  batch: int, lr: float, seed: int, pool: int = 2048, evaluate_every: int = 50,
                  progress: bool = False) -> tuple[Decoder, list[list[float]]]:
    """Adam on the binary cross-entropy of reconstructed pixels (in [0, 1]; a squared-error loss stalls at the
    all-background image on Omniglot) from deterministic layer-3 features of a pool of `pool` train images
    (computed once, in batches the size of the held-out set); returns the decoder and [step, held-out mean
    squared error] before training and every `evaluate_every` steps."""
    generator = torch.Generator(device=train.device).manual_seed(seed)
    x_held, pixels_held = held_out
    h_held = layer_features(learner, x_held)
    h_pool, pixels_pool = feature_pool(learner, train, pool, len(x_held), generator)
    with torch.random.fork_rng(devices=[]):                  # seeded initial weights, global RNG untouched
        torch.manual_seed(seed)
        decoder = Decoder(h_held.shape[1], tuple(pixels_held.shape[1:])).to(h_held.device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)

    def held_out_error() -> float:
        with torch.no_grad():
            return float(F.mse_loss(decoder(h_held), pixels_held))

    history = [[0, held_out_error()]]
    for step in tqdm(range(1, steps + 1), desc="fig6 decoder", disable=not progress, leave=False):
        pick = torch.randint(0, pool, (batch,), generator=generator, device=train.device)
        loss = F.binary_cross_entropy(decoder(h_pool[pick]), pixels_pool[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % evaluate_every == 0 or step == steps:
            history.append([step, held_out_error()])
    return decoder, history


def decoder_data(learner: MetaLearner, train: ImageBank, test: ImageBank, settings: dict, seed: int,
                 progress: bool = False) -> dict[str, np.ndarray]:
    """Originals, reconstructions and `perturbed` perturbed reconstructions of `examples` test images (pixels,
    [n, C, H, W]), and the decoder's held-out error history."""
    generator = torch.Generator(device=test.device).manual_seed(seed + 1)
    held_out = _batch(test, settings["held_out"], generator, learner.dtype)
    decoder, history = train_decoder(learner, train, held_out, settings["steps"], settings["batch"], settings["lr"],
                                     seed, settings["pool"], progress=progress)
    x, pixels = held_out
    noise_generator = torch.Generator(device=learner.device).manual_seed(seed)
    with torch.no_grad():
        clean = decoder(layer_features(learner, x))
        perturbed = [decoder(layer_features(learner, x, one_sample_noise(learner, len(x), noise_generator)))
                     for _ in range(settings["perturbed"])]
    shown = slice(0, settings["examples"])
    return {"original": pixels[shown].cpu().numpy(), "reconstruction": clean[shown].cpu().numpy(),
            "perturbed": torch.stack(perturbed)[:, shown].cpu().numpy(), "history": np.asarray(history)}


def render(fig_def: dict, results: list[dict], ctx: FigureContext) -> Figure:
    """Figure 6: one image grid (rows: original, reconstruction, perturbed reconstructions; columns: examples)."""
    panel = fig_def["panel"]
    result = find_result(results, panel["row"], panel["column"])
    fig = Figure(figsize=(8.5, 5.2), layout="constrained")
    ax = fig.subplots()
    if result is None:
        no_result(ax, panel["title"])
        ax.set_xlabel("test example")
        ax.set_ylabel("image")
        ax.legend(handles=[], title="no result yet", fontsize=7)
        caption(fig, fig_def, fig_def["caption"])
        return fig
    settings = preset_settings(fig_def, "decoder", result)
    key = {"figure": "fig6", "version": VERSION, "cell": result["name"], "settings": settings, "seed": fig_def["seed"]}

    def compute() -> dict[str, np.ndarray]:
        experiment = load_trained(result, ctx.store.checkpoint_path(result["name"]), ctx.data_root, ctx.device)
        return decoder_data(experiment.learner, experiment.train_bank, experiment.test_bank, settings,
                            fig_def["seed"], progress=sys.stderr.isatty())     # a bar on a terminal only

    data = ctx.cached(key, compute)
    rows = [("original", data["original"]), ("reconstruction", data["reconstruction"])] + [
        (f"perturbed {k + 1}", p) for k, p in enumerate(data["perturbed"])]
    kinds = ["original", "reconstruction"] + ["perturbed"] * len(data["perturbed"])
    draw_montage(ax, [list(images) for _, images in rows], row_labels=[name for name, _ in rows],
                 col_labels=[str(i + 1) for i in range(len(data["original"]))], row_kinds=kinds,
                 kind_labels={"original": "original test image",
                              "reconstruction": "decoded from unperturbed layer-3 features",
                              "perturbed": "decoded from perturbed layer-3 features"})
    ax.set_title(panel["title"], fontsize=10)
    ax.set_xlabel("test example")
    ax.set_ylabel("decoded from")
    steps, error = data["history"][-1]
    caption(fig, fig_def, f"{fig_def['caption']} Decoder: {int(steps)} Adam steps, held-out reconstruction error "
                 f"{error:.4f} (mean squared error, pixels in [0, 1]; {data['history'][0][1]:.4f} before training).")
    return fig

