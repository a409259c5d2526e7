"""Data loaders on small files written in the real formats, plus the installed Fashion-MNIST."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch
from PIL import Image

from tasks.data import datasets as data
from tasks.data import DataConfig, DataError, load_split, normalization
from tasks.normalization import Normalization


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True, magic: int | None = None) -> None:
    magic = magic if magic is not None else {3: 2051, 1: 2049}[array.ndim]
    blob = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)


def write_fashion_split(folder: Path, prefix: str, labels: list[int], *, compress: bool = True) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    images = np.arange(len(labels) * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(-1, 28, 28)
    write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress=compress)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.array(labels, dtype=np.uint8), compress=compress)
    return images


def write_pickle(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(entry))


def write_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (20, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_fashion_mnist_reads_gzipped_and_plain_idx_files(tmp_path):
    train_images = write_fashion_split(tmp_path, "train", [3, 1, 3, 0], compress=True)
    write_fashion_split(tmp_path, "t10k", [9, 8], compress=False)
    config = DataConfig(root=str(tmp_path), val_fraction=0)

    train, test = load_split(config, "train"), load_split(config, "test")

    assert (len(train), len(test)) == (4, 2)
    assert (train.channels, train.image_size, train.num_classes) == (1, 28, 10)
    assert train.class_names[0] == "T-shirt/top" and train.class_names[9] == "Ankle boot"
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [3, 1, 3, 0]
    batch = train.images_at(torch.tensor([2, 0]))
    assert batch.shape == (2, 1, 28, 28) and batch.dtype == torch.uint8
    assert torch.equal(batch[:, 0], torch.from_numpy(train_images[[2, 0]]))


def test_fashion_mnist_reads_torchvision_raw_layout(tmp_path):
    write_fashion_split(tmp_path / "FashionMNIST" / "raw", "t10k", [4, 5, 6])

    test = load_split(DataConfig(root=str(tmp_path), val_fraction=0), "test")

    assert test.labels.tolist() == [4, 5, 6]


def test_train_per_class_keeps_first_images_of_each_class_in_file_order(tmp_path):
    images = write_fashion_split(tmp_path, "train", [2, 0, 2, 2, 1, 0, 0, 2])

    train = load_split(DataConfig(root=str(tmp_path), val_fraction=0, train_per_class=2), "train")

    assert train.labels.tolist() == [2, 0, 2, 1, 0]
    assert torch.equal(train.images_at(torch.arange(5))[:, 0], torch.from_numpy(images[[0, 1, 2, 4, 5]]))


def test_test_limit_keeps_first_test_images(tmp_path):
    write_fashion_split(tmp_path, "t10k", [7, 3, 3, 1])

    test = load_split(DataConfig(root=str(tmp_path), val_fraction=0, test_limit=2), "test")

    assert test.labels.tolist() == [7, 3]


def test_missing_default_fashion_mnist_names_apt_command(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DEFAULT_ROOT", tmp_path / "absent")

    with pytest.raises(DataError) as raised:
        load_split(DataConfig(), "train")

    message = str(raised.value)
    assert str(tmp_path / "absent") in message
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert "data.root" in message and "data.download=true" in message


def test_corrupt_idx_magic_is_an_error_naming_the_file(tmp_path):
    write_fashion_split(tmp_path, "train", [0, 1])
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1], dtype=np.uint8), magic=2051)

    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz.*magic 2051, expected 2049"):
        load_split(DataConfig(root=str(tmp_path), val_fraction=0), "train")


def test_truncated_idx_is_an_error_naming_the_file(tmp_path):
    write_fashion_split(tmp_path, "t10k", [0, 1], compress=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])

    with pytest.raises(DataError, match="t10k-images-idx3-ubyte holds .* truncated or corrupt"):
        load_split(DataConfig(root=str(tmp_path), val_fraction=0), "test")


def cifar_batch(labels: list[int], label_key: bytes) -> tuple[dict, np.ndarray]:
    pixels = np.random.default_rng(len(labels)).integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    return {b"batch_label": b"batch", label_key: labels, b"data": pixels, b"filenames": []}, pixels


@pytest.mark.parametrize("point_at_parent", [True, False])
def test_cifar10_reads_official_pickle_folder_or_its_parent(tmp_path, point_at_parent):
    folder = tmp_path / "cifar-10-batches-py"
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer",
             b"dog", b"frog", b"horse", b"ship", b"truck"]
    write_pickle(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": 2})
    first_pixels = None
    for i in range(1, 6):
        entry, pixels = cifar_batch([i, 9 - i], b"labels")
        write_pickle(folder / f"data_batch_{i}", entry)
        first_pixels = pixels if first_pixels is None else first_pixels
    write_pickle(folder / "test_batch", cifar_batch([0, 1, 2], b"labels")[0])
    config = DataConfig(name="cifar10", root=str(tmp_path if point_at_parent else folder), val_fraction=0)

    train, test = load_split(config, "train"), load_split(config, "test")

    assert (len(train), len(test)) == (10, 3)
    assert (train.channels, train.image_size, train.num_classes) == (3, 32, 10)
    assert train.class_names[1] == "automobile"
    assert train.labels.tolist()[:4] == [1, 8, 2, 7]
    red_plane = train.images_at(torch.tensor([0]))[0, 0]  # (32, 32)
    assert torch.equal(red_plane, torch.from_numpy(first_pixels[0, :1024].reshape(32, 32)))


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    fine_names = [f"class{i}".encode() for i in range(100)]
    write_pickle(folder / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": [b"c"] * 20})
    train_entry, _ = cifar_batch([99, 5, 5], b"fine_labels")
    write_pickle(folder / "train", {**train_entry, b"coarse_labels": [0, 1, 1]})
    write_pickle(folder / "test", cifar_batch([42], b"fine_labels")[0])
    config = DataConfig(name="cifar100", root=str(folder), val_fraction=0, train_per_class=1)

    train, test = load_split(config, "train"), load_split(config, "test")

    assert train.num_classes == 100 and train.class_names[99] == "class99"
    assert train.labels.tolist() == [99, 5]
    assert test.labels.tolist() == [42]


def test_missing_cifar_folder_says_what_is_expected(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py.*batches.meta.*data.download=true"):
        load_split(DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0), "train")


def test_imagefolder_resizes_shorter_side_and_centre_crops(tmp_path):
    image = Image.new("RGB", (60, 20), (255, 0, 0))  # red | green | blue thirds
    image.paste((0, 255, 0), (20, 0, 40, 20))
    image.paste((0, 0, 255), (40, 0, 60, 20))
    (tmp_path / "train" / "cat").mkdir(parents=True)
    image.save(tmp_path / "train" / "cat" / "a.png")
    write_image(tmp_path / "train" / "dog" / "b.jpg", (10, 20, 30))
    write_image(tmp_path / "val" / "dog" / "c.JPEG", (10, 20, 30))

    train = load_split(DataConfig(name="imagefolder", root=str(tmp_path), val_fraction=0, image_size=16), "train")
    test = load_split(DataConfig(name="imagefolder", root=str(tmp_path), val_fraction=0, image_size=16), "test")

    assert train.class_names == ("cat", "dog") and train.labels.tolist() == [0, 1]
    assert test.labels.tolist() == [1]
    batch = train.images_at(torch.tensor([0, 1]))
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == torch.uint8
    assert torch.equal(batch[0, :, 8, 8], torch.tensor([0, 255, 0], dtype=torch.uint8))  # centre third
    assert (batch[0, 1, :, 4:12] == 255).all()
    assert (batch[1].float().mean(dim=(1, 2)) - torch.tensor([10.0, 20.0, 30.0])).abs().max() < 3


def test_imagefolder_image_size_defaults_to_64(tmp_path):
    write_image(tmp_path / "train" / "cat" / "a.png", (1, 2, 3))
    write_image(tmp_path / "train" / "dog" / "a.png", (3, 2, 1))

    config = DataConfig(name="imagefolder", root=str(tmp_path), val_fraction=0)

    assert config.image_size == 64
    assert load_split(config, "train").images_at(torch.tensor([0])).shape == (1, 3, 64, 64)


def test_tiny_imagenet_val_annotations_layout(tmp_path):
    for wnid in ("n01443537", "n01629819"):
        for i in range(3):
            write_image(tmp_path / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", (i * 50, 0, 0), (64, 64))
        (tmp_path / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    write_image(tmp_path / "val" / "images" / "val_0.JPEG", (0, 200, 0), (64, 64))
    write_image(tmp_path / "val" / "images" / "val_1.JPEG", (0, 0, 200), (64, 64))
    (tmp_path / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn01629819\t0\t32\t44\t62\nval_1.JPEG\tn01443537\t52\t37\t61\t63\n")
    config = DataConfig(name="imagefolder", root=str(tmp_path), val_fraction=0, train_per_class=2)

    train, test = load_split(config, "train"), load_split(config, "test")

    assert train.class_names == ("n01443537", "n01629819")
    assert [p.name for p in train.paths] == ["n01443537_0.JPEG", "n01443537_1.JPEG",
                                             "n01629819_0.JPEG", "n01629819_1.JPEG"]
    assert test.labels.tolist() == [1, 0]
    assert test.images_at(torch.tensor([0]))[0, 1].float().mean() > 150  # val_0 is green


def test_imagefolder_without_train_folder_says_what_is_expected(tmp_path):
    write_image(tmp_path / "cat" / "a.png", (1, 2, 3))

    with pytest.raises(DataError, match=r"no train/ subfolder.*expected root/train/<class>/\*\.JPEG"):
        load_split(DataConfig(name="imagefolder", root=str(tmp_path), val_fraction=0), "train")


def test_undecodable_image_is_an_error_naming_the_file(tmp_path):
    broken = tmp_path / "train" / "cat" / "broken.png"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a png")
    write_image(tmp_path / "train" / "dog" / "a.png", (3, 2, 1))

    source = load_split(DataConfig(name="imagefolder", root=str(tmp_path), val_fraction=0), "train")

    with pytest.raises(DataError, match="broken.png"):
        source.images_at(torch.tensor([0]))


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagefolder"])
def test_root_is_required_for_cifar_and_imagefolder(name):
    with pytest.raises(pydantic.ValidationError, match="data.root is required"):
        DataConfig(name=name)


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10"])
def test_image_size_is_rejected_for_array_data_sets(name):
    with pytest.raises(pydantic.ValidationError, match="data.image_size applies only to"):
        DataConfig(name=name, root="/data", image_size=32)


def test_unknown_data_config_field_is_rejected():
    with pytest.raises(pydantic.ValidationError):
        DataConfig(batch_size=3)


def test_normalization_gives_per_channel_mean_and_std():
    assert normalization(DataConfig()) == Normalization((0.2860,), (0.3530,))
    assert normalization(DataConfig(name="cifar10", root="/d")) == Normalization(
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert normalization(DataConfig(name="cifar100", root="/d")).mean == (0.5071, 0.4865, 0.4409)
    with pytest.raises(DataError, match="not resolved"):  # measured from the train split, never assumed
        normalization(DataConfig(name="imagefolder", root="/d"))
