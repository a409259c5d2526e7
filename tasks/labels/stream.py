"""The seeded stream of relabel steps: which images each step holds and how they are augmented.

Step ``s`` of epoch ``e = s // P`` (``P = ceil(N / B)`` steps per epoch) takes images
``order_e[j*B : (j+1)*B]`` (``j = s % P``) of a seeded permutation ``order_e``, then per image a
random-resized-crop box and a flip, then optionally CutMix (a permutation of the batch, lambda
~ Beta(1, 1), one box). Everything about step ``s`` comes from ``(seed, s)`` alone, so any step
can be regenerated, a store may keep only an augmentation seed, and relabel, prune and the
student all agree on what a step is.

    geometry = StreamGeometry(num_images=500, batch_size=100, epochs=300)
    aug = sample_augmentation(step_seed(seed, 17), n=100, image_size=28, crop_scale_min=0.5, cutmix=True)
    x = apply_augmentation(images[step_images(seed, 17, geometry)], aug)      # (100, C, 28, 28)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from storage.softlabels import StoredStep
from tasks.augment import crop_resize, sample_boxes, sample_flips
from tasks.runtime import derive_seed, generator


@dataclass(frozen=True)
class StreamGeometry:
    num_images: int
    batch_size: int
    epochs: int

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.num_images // self.batch_size)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def kept_step_count(ratio: float, total: int) -> int:
    """``floor((1 - ratio) * total)``, at least one, immune to float noise: "40x" (0.975) of 1200
    steps keeps exactly 30, so the factor is the one named."""
    return max(1, math.floor(round((1.0 - ratio) * total, 9)))


@dataclass
class StepAugmentation:
    """The augmentation of one step: per-image boxes (fp16-exact) and flips, optional CutMix."""

    boxes: torch.Tensor  # (n, 4) float32 fractions (y0, x0, h, w), values exactly representable in fp16
    flips: torch.Tensor  # (n,) bool
    mix_perm: torch.Tensor | None = None  # (n,) int64: image i takes the box from image mix_perm[i]
    mix_lambda: float | None = None  # fraction of each image left unmixed
    mix_box: tuple[int, int, int, int] | None = None  # (y0, x0, y1, x1) pixels


def step_seed(seed: int, step_id: int) -> int:
    return derive_seed(seed, "relabel", "step", step_id)


@lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, num_images: int) -> torch.Tensor:
    return torch.randperm(num_images, generator=generator(seed, "relabel", "epoch", epoch))


def step_images(seed: int, step_id: int, geometry: StreamGeometry) -> torch.Tensor:
    """Indices into the image store of step ``step_id`` (shorter for an epoch's last step)."""
    epoch, j = divmod(step_id, geometry.steps_per_epoch)
    order = _epoch_order(seed, epoch, geometry.num_images)
    return order[j * geometry.batch_size : (j + 1) * geometry.batch_size]


def sample_augmentation(
    aug_seed: int, *, n: int, image_size: int, crop_scale_min: float, cutmix: bool
) -> StepAugmentation:
    gen = torch.Generator().manual_seed(aug_seed)
    boxes = sample_boxes(gen, n, scale=(crop_scale_min, 1.0)).half().float()
    flips = sample_flips(gen, n)
    if not cutmix:
        return StepAugmentation(boxes, flips)
    perm = torch.randperm(n, generator=gen)
    lam = float(torch.rand(1, generator=gen))
    cut = math.sqrt(1.0 - lam)
    h, w = int(image_size * cut), int(image_size * cut)
    cy, cx = (int(v) for v in torch.randint(0, image_size, (2,), generator=gen))
    y0, y1 = max(cy - h // 2, 0), min(cy + h // 2, image_size)
    x0, x1 = max(cx - w // 2, 0), min(cx + w // 2, image_size)
    kept = 1.0 - (y1 - y0) * (x1 - x0) / image_size**2
    return StepAugmentation(boxes, flips, perm, kept, (y0, x0, y1, x1))


def apply_augmentation(images: torch.Tensor, aug: StepAugmentation) -> torch.Tensor:
    """Crop, resize and flip each image of (n, C, H, W) to its box, then paste the CutMix box."""
    x = crop_resize(images, aug.boxes, aug.flips, size=images.shape[-1])
    if aug.mix_perm is not None and aug.mix_box is not None:
        y0, x0, y1, x1 = aug.mix_box
        x[:, :, y0:y1, x0:x1] = x[aug.mix_perm.to(x.device)][:, :, y0:y1, x0:x1]
    return x


def stored_images(step: StoredStep, *, seed: int, geometry: StreamGeometry) -> torch.Tensor:
    """The image indices a stored step was labelled on: read back, or regenerated from the stream."""
    if step.image_index is not None:
        return torch.from_numpy(step.image_index.astype(np.int64))
    return step_images(seed, step.step_id, geometry)


def stored_augmentation(step: StoredStep, *, n: int, seed: int, image_size: int, crop_scale_min: float,
                        cutmix: bool) -> StepAugmentation:
    """The augmentation of a stored step's ``n`` images: read back, or regenerated from its seed
    (stored, or the stream's ``seed`` and the step's position)."""
    if step.aug_seed is not None or step.crop is None:
        aug_seed = step.aug_seed if step.aug_seed is not None else step_seed(seed, step.step_id)
        return sample_augmentation(aug_seed, n=n, image_size=image_size, crop_scale_min=crop_scale_min, cutmix=cutmix)
    boxes = torch.from_numpy(step.crop.astype(np.float32))
    flips = torch.from_numpy(step.flip.astype(bool))
    if step.mix_perm is None:
        return StepAugmentation(boxes, flips)
    box = tuple(int(v) for v in step.mix_box)
    return StepAugmentation(boxes, flips, torch.from_numpy(step.mix_perm.astype(np.int64)), step.mix_lambda, box)  # type: ignore[arg-type]
