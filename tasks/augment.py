"""Batched random-resized-crop and flip on tensors, with the boxes made explicit.

Every stage that augments (teacher training, class statistics, synthesis, relabelling) uses
these two functions, so a stored crop box replays exactly: boxes are ``(y0, x0, h, w)`` as
fractions of the image side, and one affine resample applies crop, resize and flip at once.

    boxes = sample_boxes(generator(seed, "epoch", 3), n=256, scale=(0.5, 1.0))  # (256, 4)
    flips = sample_flips(gen, n=256)                                            # (256,) bool
    x = crop_resize(images, boxes, flips, size=28)                             # (256, C, 28, 28)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tasks.augment_config import AugmentConfig


def sample_boxes(
    gen: torch.Generator,
    n: int,
    *,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Random-resized-crop boxes ``(n, 4)`` as fractions ``(y0, x0, h, w)``."""
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=gen)
    log_ratio = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    y0 = torch.rand(n, generator=gen) * (1 - h)
    x0 = torch.rand(n, generator=gen) * (1 - w)
    return torch.stack([y0, x0, h, w], dim=1)


def sample_flips(gen: torch.Generator, n: int) -> torch.Tensor:
    return torch.rand(n, generator=gen) < 0.5


def full_boxes(n: int) -> torch.Tensor:
    """Boxes covering the whole image: crop_resize with them is the identity."""
    return torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(n, 4).clone()


def crop_resize(
    images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, *, size: int
) -> torch.Tensor:
    """Crop each image to its box, resize to ``size`` (bilinear), mirror where ``flips``."""
    boxes = boxes.to(images.device, images.dtype)
    y0, x0, h, w = boxes.unbind(1)  # each (B,)
    sign = 1.0 - 2.0 * flips.to(images.device, images.dtype)
    theta = torch.zeros(images.shape[0], 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = 2 * x0 + w - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * y0 + h - 1
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment_batch(images: torch.Tensor, config: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Per-sample crop and flip drawn from ``gen``; the identity when disabled."""
    n, size = images.shape[0], images.shape[-1]
    if not config.enabled:
        return images
    boxes = sample_boxes(gen, n, scale=(config.crop_scale_min, config.crop_scale_max))
    flips = sample_flips(gen, n) if config.flip else torch.zeros(n, dtype=torch.bool)
    return crop_resize(images, boxes, flips, size=size)
