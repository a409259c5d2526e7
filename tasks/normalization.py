"""Pixel spaces: stored uint8 images <-> the normalised floats the networks see.

    norm = Normalization(mean=(0.286,), std=(0.353,))
    x = norm.to_input(images_u8.to(device))      # (B, C, H, W) float32, normalised
    images_u8 = norm.to_uint8(x)                 # back, rounded and clipped to [0, 255]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, len(self.mean), 1, 1)
        mean = torch.tensor(self.mean, device=like.device, dtype=torch.float32).view(shape)
        std = torch.tensor(self.std, device=like.device, dtype=torch.float32).view(shape)
        return mean, std

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 1] float) images to normalised float32."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        mean, std = self._stats(x)
        return (x - mean) / std

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised floats back to [0, 1] pixel units (not clipped)."""
        mean, std = self._stats(x)
        return x * std + mean

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        """Clip normalised floats to the range that valid [0, 1] pixels map to."""
        mean, std = self._stats(x)
        return torch.maximum(torch.minimum(x, (1 - mean) / std), -mean / std)

    def to_uint8(self, x: torch.Tensor) -> torch.Tensor:
        return (self.to_unit(x).clamp(0, 1) * 255).round().to(torch.uint8)
