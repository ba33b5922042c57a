"""A synthetic bank with learnable structure (class prototypes plus pixel noise), so the suite runs with no data."""
from __future__ import annotations

import numpy as np

from bench.data.bank import ImageBank


def synthetic_bank(n_classes: int, n_per_class: int, image_shape: tuple[int, int, int], seed: int,
                   noise: float = 40.0, device: str = "cpu") -> ImageBank:
    """Each class is a smooth random prototype image; its examples are the prototype plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    c, h, w = image_shape
    coarse = rng.uniform(0, 255, size=(n_classes, 1, c, max(h // 4, 1), max(w // 4, 1)))
    proto = np.repeat(np.repeat(coarse, 4, axis=3), 4, axis=4)[..., :h, :w]
    proto = np.pad(proto, [(0, 0)] * 3 + [(0, h - proto.shape[3]), (0, w - proto.shape[4])], mode="edge")
    images = proto + rng.normal(0, noise, size=(n_classes, n_per_class, c, h, w))
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    names = [f"synthetic_{seed}_{i:04d}" for i in range(n_classes)]
    return ImageBank.from_numpy(images, names, mean=(0.5,) * c, std=(0.25,) * c, device=device)
