"""The validation split: carved from train by a seeded stratified draw (data.val_fraction,
data.val_seed), or an image folder's own val/ where a test/ folder exists; refusals name the counts."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from tasks.data import DataConfig, DataError, load_split
from tasks.data.splits import carve_validation

INSTALLED_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not INSTALLED_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_installed_fashion_mnist_has_60000_train_and_10000_test_images_and_a_stratified_validation_carve():
    whole = load_split(DataConfig(val_fraction=0), "train")
    train, val, test = (load_split(DataConfig(), split) for split in ("train", "val", "test"))
    assert (len(whole), len(train), len(val), len(test)) == (60000, 54000, 6000, 10000)
    assert torch.bincount(train.labels).tolist() == [5400] * 10 and torch.bincount(val.labels).tolist() == [600] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    held_out, kept = carve_validation(whole.labels, fraction=0.1, seed=0, class_names=whole.class_names)
    assert not set(held_out.tolist()) & set(kept.tolist()) and len(held_out) + len(kept) == 60000  # disjoint, all
    assert torch.equal(val.images_at(torch.arange(6000)), whole.images_at(held_out))
    assert torch.equal(train.images_at(torch.arange(54000)), whole.images_at(kept))
    again, _ = carve_validation(whole.labels, fraction=0.1, seed=0, class_names=whole.class_names)
    other, _ = carve_validation(whole.labels, fraction=0.1, seed=1, class_names=whole.class_names)
    assert torch.equal(again, held_out) and not torch.equal(other, held_out)  # seeded by data.val_seed

    subset = load_split(DataConfig(train_per_class=5, val_limit=7), "train")
    assert len(subset) == 50 and torch.bincount(subset.labels).tolist() == [5] * 10
    first_five = torch.cat([torch.nonzero(train.labels == c)[:5, 0] for c in range(10)]).sort().values
    assert torch.equal(subset.labels, train.labels[first_five])  # the first of what the carve left for training
    assert torch.equal(subset.images_at(torch.arange(50)), train.images_at(first_five))
    assert len(load_split(DataConfig(val_limit=7), "val")) == 7


def test_a_validation_fraction_that_empties_a_side_of_a_class_is_refused_with_the_counts():
    labels = torch.tensor([0] * 20 + [1] * 3)
    with pytest.raises(DataError, match=r"data.val_fraction=0.1 leaves class 1 \(b, 3 images\) with no validation "
                                        r"image \(0 for validation, 3 for training\); choose data.val_fraction between "
                                        r"0.333 and 0.667"):
        carve_validation(labels, fraction=0.1, seed=0, class_names=("a", "b"))
    with pytest.raises(DataError, match=r"class 1 \(b, 3 images\) with no training image \(3 for validation, 0"):
        carve_validation(labels, fraction=0.9, seed=0, class_names=("a", "b"))
    with pytest.raises(DataError, match=r"class 1 \(b, 2 images\) with no validation image .*; set data.val_fraction=0.5,"):
        carve_validation(torch.tensor([0] * 20 + [1] * 2), fraction=0.1, seed=0, class_names=("a", "b"))
    with pytest.raises(DataError, match=r"class 1 \(b, 1 image\) with no validation image .*; a class needs 2 images"):
        carve_validation(torch.tensor([0] * 20 + [1]), fraction=0.5, seed=0, class_names=("a", "b"))
    with pytest.raises(DataError, match="reads a validation split but data.val_fraction is 0"):
        load_split(DataConfig(val_fraction=0), "val")


def test_an_imagefolder_with_a_test_folder_reads_val_as_its_validation_split(tmp_path):
    for split, per_class in (("train", 4), ("val", 2), ("test", 3)):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (16, 16), (i * 30, 0, 0)).save(tmp_path / split / name / f"{i}.png")
    config = DataConfig(name="imagefolder", root=str(tmp_path), image_size=16)  # val_fraction 0.1 is not used
    sizes = {split: len(load_split(config, split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 8, "val": 4, "test": 6}
    assert all("/val/" in f for f in load_split(config, "val").files)
