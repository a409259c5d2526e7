"""What a data set is to the pipeline: the `data` config section, the error every loader raises,
and the check that its folder exists, all without torch (a bad config is refused in a blink). The
split types the loaders return are in :mod:`tasks.data.sources`, the loaders themselves and the
per-data-set normalisation in :mod:`tasks.data.datasets`; reading a split in batches (decoded in
worker processes) is :mod:`tasks.data.batches`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.augment_config import AugmentConfig

Split = Literal["train", "val", "test"]
DataSetName = Literal["fashion_mnist", "cifar10", "cifar100", "imagefolder"]

IMAGEFOLDER_DEFAULT_SIZE = 64
FASHION_MNIST_DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


class DataError(ValueError):
    """A data set is missing or malformed; the message names the thing and the fix."""


class DataConfig(BaseModel):
    """Which real data set to read, from where, and how much of it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: DataSetName = "fashion_mnist"
    root: str | None = None  # None: Fashion-MNIST's Debian folder; required for the others
    download: bool = False  # fashion_mnist/cifar: torchvision downloads missing files into root
    image_size: int | None = Field(None, ge=8, le=512)  # imagefolder only (default 64)
    channels: Literal[1, 3] | None = Field(
        None, description="imagefolder only: 1 (grayscale) or 3 (RGB) channels; None: 1 when the first image of "
        "every train class is grayscale, else 3 (a torchvision teacher always gets 3)."
    )
    mean: tuple[float, ...] | None = Field(
        None, description="Per-channel mean in [0, 1] pixel units the networks are normalised with; None: the "
        "published train-split value for fashion_mnist and cifar, measured once from the train split for "
        "imagefolder (stored under <artifact root>/normalization and part of every fingerprint)."
    )
    std: tuple[float, ...] | None = Field(None, description="Per-channel std, with data.mean.")
    identity: Literal["listing", "content"] = Field(
        "listing", description="What names an imagefolder split in every fingerprint: listing, the sorted "
        "(path, size, mtime) of its image files (no image is read); content, every file's bytes (a full read, "
        "memoised). Fashion-MNIST and CIFAR are always named by their files' bytes."
    )
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of each class's training images taken out as the validation split "
        "before any stage sees the data (every knob is chosen on it; test is read once); 0: none. An imagefolder "
        "with test/ beside val/ uses val/ instead."
    )
    val_seed: int = Field(0, ge=0, description="Seed of the validation carve (fixed for a data set, not per run).")
    train_per_class: int | None = Field(None, ge=1)  # first k training images of each class (after the carve)
    val_limit: int | None = Field(None, ge=1)  # first n validation images
    test_limit: int | None = Field(None, ge=1)  # first n test images
    augment: AugmentConfig = Field(
        AugmentConfig(crop_scale_min=0.5), description="The one training augmentation of this data: class "
        "statistics, synthesis, relabel and hard-label students use it unless their section overrides it."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_imagefolder_size(cls, data: Any) -> Any:
        # Filled in here, not at load time, so the resolved config (and its fingerprint) says 64.
        if isinstance(data, dict) and data.get("name") == "imagefolder" and data.get("image_size") is None:
            return {**data, "image_size": IMAGEFOLDER_DEFAULT_SIZE}
        return data

    def augment_with(self, override: AugmentConfig | None) -> AugmentConfig:
        """A stage's augmentation: its own section's ``augment`` when set, else ``data.augment``."""
        return override or self.augment

    def crop_scale_min_with(self, override: float | None) -> float:
        """A stage's smallest crop scale: its own section's when set, else ``data.augment``'s."""
        return override or self.augment.crop_scale_min

    @model_validator(mode="after")
    def _check_fields_fit_name(self) -> Self:
        if self.root is None and self.name != "fashion_mnist":
            raise ValueError(f"data.root is required for data.name={self.name!r}: set it to the "
                             "folder holding the data set")
        if self.image_size is not None and self.name != "imagefolder":
            raise ValueError(f"data.image_size applies only to data.name='imagefolder'; "
                             f"{self.name} images keep their native size, so remove data.image_size")
        if self.channels is not None and self.name != "imagefolder":
            raise ValueError(f"data.channels applies only to data.name='imagefolder'; {self.name} images keep "
                             "their native channels, so remove data.channels")
        if (self.mean is None) != (self.std is None):
            raise ValueError("data.mean and data.std go together: set both (per channel) or neither")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std) or len(self.mean) not in (1, 3):
                raise ValueError(f"data.mean {list(self.mean)} and data.std {list(self.std)} need one value per "
                                 "channel (1 or 3 each)")
            if not all(0 <= m <= 1 for m in self.mean) or not all(0 < s <= 1 for s in self.std):
                raise ValueError("data.mean must lie in [0, 1] and data.std in (0, 1]: they are in [0, 1] pixel "
                                 "units, e.g. data.mean=[0.485,0.456,0.406] data.std=[0.229,0.224,0.225]")
        if self.download and self.name == "imagefolder":
            raise ValueError("data.download works for fashion_mnist and cifar only; "
                             "download the ImageFolder tree yourself and set data.root")
        return self


def missing_root(config: DataConfig) -> str | None:
    """Why ``config``'s data folder cannot be read at all (it is not there), or None. Found without
    reading a file; what the folder holds is the loaders' to check."""
    if config.root is None and config.name != "fashion_mnist":
        return None  # DataConfig refuses this itself
    root = Path(config.root) if config.root is not None else FASHION_MNIST_DEFAULT_ROOT
    if root.is_dir() or (config.download and config.name != "imagefolder"):
        return None
    if config.name == "fashion_mnist":
        return fashion_mnist_not_found(root)
    fix = ("set data.root to the folder holding train/ and val/" if config.name == "imagefolder" else
           "set data.root to the folder of the official python archive, or set data.download=true (needs internet)")
    return f"{config.name} data folder {root} does not exist; {fix}"


def fashion_mnist_not_found(root: Path) -> str:
    """What a missing Fashion-MNIST folder, or one without its IDX files, is told."""
    return (f"Fashion-MNIST not found in {root}; install it with `sudo apt-get install dataset-fashion-mnist`, or "
            "set data.root to a folder holding the IDX files, or set data.download=true (needs internet)")
