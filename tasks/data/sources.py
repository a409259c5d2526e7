"""The split types the loaders return: `ImageSource` (images fetched by index) and `ImageSet` (a
split held in memory as uint8 pixels). Apart from :mod:`tasks.data.config` because they hold
tensors, and a config must load without torch."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import torch

from tasks.data.config import DataError


class ImageSource(Protocol):
    """A labelled split whose images are fetched by index."""

    @property
    def labels(self) -> torch.Tensor: ...  # (N,) int64
    @property
    def class_names(self) -> tuple[str, ...]: ...
    @property
    def channels(self) -> int: ...
    @property
    def image_size(self) -> int: ...  # square: H == W
    @property
    def num_classes(self) -> int: ...
    def __len__(self) -> int: ...
    def images_at(self, index: torch.Tensor) -> torch.Tensor: ...  # (B,) int64 -> (B, C, H, W) uint8


def class_sizes(source: ImageSource) -> dict[str, int]:
    """Each class's image count in ``source``, by class name."""
    counts = torch.bincount(source.labels, minlength=source.num_classes).tolist()
    return dict(zip(source.class_names, counts))


@dataclass(frozen=True)
class ImageSet:
    """A split held in memory as uint8 pixels (Fashion-MNIST, CIFAR)."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        square = self.images.ndim == 4 and self.images.shape[2] == self.images.shape[3]
        if not square or self.images.dtype != torch.uint8 or self.labels.shape != (len(self.images),):
            raise DataError(f"ImageSet needs (N, C, S, S) uint8 images and (N,) labels, got images "
                            f"{tuple(self.images.shape)} {self.images.dtype}, "
                            f"labels {tuple(self.labels.shape)}")

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[2]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def images_at(self, index: torch.Tensor) -> torch.Tensor:
        return self.images[index]

    def select(self, index: torch.Tensor) -> ImageSet:
        return replace(self, images=self.images[index], labels=self.labels[index])
