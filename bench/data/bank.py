"""An image bank: one split of a dataset as a single uint8 tensor [classes, images, C, H, W] on a device."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from bench.data.pixels import PixelSpace


@dataclass
class ImageBank:
    """A split held as uint8 [n_classes, n_per_class, C, H, W]; floats come from (x/255 - mean) / std."""

    images: torch.Tensor
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    excluded: torch.Tensor | None = None       # bool [classes, images]: never sampled (dropped duplicates)
    hygiene: dict | None = None                # the dataset's duplicate report (bench.data.duplicates)
    _moment_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_numpy(cls, images: np.ndarray, class_names: list[str], mean: tuple[float, ...],
                   std: tuple[float, ...], device: str | torch.device = "cpu") -> "ImageBank":
        """Move a uint8 array [classes, images, C, H, W] to the device once."""
        if images.dtype != np.uint8 or images.ndim != 5:
            raise ValueError(f"expected uint8 [classes, images, C, H, W], got {images.dtype} {images.shape}")
        return cls(torch.from_numpy(np.ascontiguousarray(images)).to(device), list(class_names),
                   tuple(float(m) for m in mean), tuple(float(s) for s in std))

    @property
    def n_classes(self) -> int:
        """Classes in the split."""
        return self.images.shape[0]

    @property
    def n_per_class(self) -> int:
        """Images per class."""
        return self.images.shape[1]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(self.images.shape[2:])

    @property
    def device(self) -> torch.device:
        """Where the images live."""
        return self.images.device

    def to_float(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Normalise uint8 images (any leading dims, then C, H, W) to floats: (x / 255 - mean) / std computed as x *
        scale + shift, a conversion and two in-place multiply-adds (bench/benchmarks/sampler_speed.py: 9x faster on
        the CPU than dividing by the broadcast std; mixed uint8-float kernels are slower still)."""
        shift, scale = self._moments(dtype, x.device)
        return x.to(dtype).mul_(scale).add_(shift)

    def _moments(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """shift = -mean / std and scale = 1 / (255 std) as [C, 1, 1] tensors (computed in float64), made once per
        dtype and device (no copy per episode)."""
        key = (dtype, device)
        if key not in self._moment_cache:
            mean = torch.tensor(self.mean, dtype=torch.float64).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float64).view(-1, 1, 1)
            self._moment_cache[key] = ((-mean / std).to(dtype=dtype, device=device),
                                       (1 / (255 * std)).to(dtype=dtype, device=device))
        return self._moment_cache[key]

    def value_range(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel float values of pixel 0 and pixel 255, shape [C, 1, 1], for clamping attacks."""
        lo = self.to_float(torch.zeros(len(self.mean), 1, 1, dtype=torch.uint8, device=self.device), dtype)
        hi = self.to_float(torch.full((len(self.mean), 1, 1), 255, dtype=torch.uint8, device=self.device), dtype)
        return lo, hi

    def pixel_space(self, dtype: torch.dtype = torch.float32) -> PixelSpace:
        """How the floats relate to [0, 1] pixels (std per channel, range), for attacks in pixel units."""
        lo, hi = self.value_range(dtype)
        std = torch.tensor(self.std, dtype=torch.float64).view(-1, 1, 1).to(dtype=dtype, device=self.device)
        return PixelSpace(std, lo, hi)

    @property
    def min_images_per_class(self) -> int:
        """Images a class can give an episode: n_per_class less any excluded ones."""
        if self.excluded is None:
            return self.n_per_class
        return self.n_per_class - int(self.excluded.sum(1).max())
