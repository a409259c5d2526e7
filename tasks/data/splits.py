"""The three splits the pipeline reads: train, validation and test.

The validation split is taken out of train before any stage sees the data: per class, a seeded
permutation (``data.val_seed``) puts ``round(data.val_fraction * n)`` of the class's n images in
validation and the rest in train, so teacher, class statistics, synthesis, random real subsets
and any selection never see a validation image, and every knob can be chosen on it while test
is read once. An ImageFolder with ``test/`` beside ``val/`` brings its own: ``val/`` is
validation and nothing is carved. Then the cuts: the first ``data.train_per_class`` of each
class, the first ``data.val_limit`` validation and ``data.test_limit`` test images.

    train, val, test = (load_split(config, split) for split in ("train", "val", "test"))
"""

from __future__ import annotations

import torch

from tasks.data.config import DataConfig, DataError, Split
from tasks.data.sources import ImageSource
from tasks.data.datasets import stored_split
from tasks.data.image_folder import has_own_validation
from tasks.runtime import generator


def has_validation(config: DataConfig) -> bool:
    """Whether ``config`` has a validation split: carved (val_fraction > 0) or an ImageFolder's own."""
    return config.val_fraction > 0 or has_own_validation(config)


def load_split(config: DataConfig, split: Split) -> ImageSource:
    """``split`` of ``config``'s data set, validation carved (or read from its own folder) and cut."""
    if split == "test" or has_own_validation(config):
        source = stored_split(config, split)
    else:
        whole = stored_split(config, "train")
        validation, train = carve_validation(whole.labels, fraction=config.val_fraction, seed=config.val_seed,
                                             class_names=whole.class_names)
        if split == "val" and not len(validation):
            raise DataError("this run reads a validation split but data.val_fraction is 0; set it above 0 (e.g. 0.1), "
                            "or give an ImageFolder with test/ beside val/")
        source = whole.select(validation if split == "val" else train)
    _check_channels(config, source)
    if split == "train" and config.train_per_class is not None:
        return source.select(_first_per_class(source.labels, config.train_per_class))
    limit = {"val": config.val_limit, "test": config.test_limit}.get(split)
    return source if limit is None else source.select(torch.arange(min(limit, len(source))))


def carve_validation(labels: torch.Tensor, *, fraction: float, seed: int,
                     class_names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation, train) indices into ``labels`` (N,), each sorted: per class, a seeded
    permutation's first ``round(fraction * n)`` go to validation. DataError when a class would be
    left with no validation or no training image."""
    validation, train = [], []
    for c, name in enumerate(class_names):
        members = torch.nonzero(labels == c).squeeze(1)
        held_out = round(fraction * len(members))
        if fraction > 0 and not 0 < held_out < len(members):
            side = "validation" if held_out == 0 else "training"
            low, high = 1 / len(members), 1 - 1 / len(members)
            fix = ("a class needs 2 images to be split" if len(members) < 2 else
                   f"set data.val_fraction={low:.3g}" if low == high else
                   f"choose data.val_fraction between {low:.3g} and {high:.3g}")
            count = f"{len(members)} image{'s' if len(members) != 1 else ''}"
            raise DataError(f"data.val_fraction={fraction} leaves class {c} ({name}, {count}) with no "
                            f"{side} image ({held_out} for validation, {len(members) - held_out} for training); "
                            f"{fix}, add images to the class, or set data.val_fraction=0 for no validation split")
        order = members[torch.randperm(len(members), generator=generator(seed, "validation", c))]
        validation.append(order[:held_out])
        train.append(order[held_out:])
    return torch.cat(validation).sort().values, torch.cat(train).sort().values


def _first_per_class(labels: torch.Tensor, limit_per_class: int) -> torch.Tensor:
    order = torch.argsort(labels, stable=True)  # (N,) grouped by class, file order within a class
    sorted_labels = labels[order]
    rank_in_class = torch.arange(len(labels)) - torch.searchsorted(sorted_labels, sorted_labels)
    return order[rank_in_class < limit_per_class].sort().values


def _check_channels(config: DataConfig, source: ImageSource) -> None:
    if config.mean is not None and len(config.mean) != source.channels:
        also = f", or set data.channels={len(config.mean)}" if config.name == "imagefolder" else ""
        where = f" at {config.root}" if config.root else ""
        raise DataError(f"data.mean/std give {len(config.mean)} values per pixel but the {config.name} images{where} "
                        f"have {source.channels} channel(s); give one value per channel{also}")
