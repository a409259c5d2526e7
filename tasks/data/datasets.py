"""The data sets by name, read from disk, and their normalisation.

Owns the loaders for Fashion-MNIST (IDX files) and CIFAR-10/100 (the official python-pickle
folders), the registry that picks a loader by `data.name` (ImageFolder trees come from
:mod:`tasks.data.image_folder`), and the per-channel mean/std each data set is normalised with:
given in the config, known for the fixed data sets, or measured once from the train split by
the `normalization` stage (:mod:`tasks.stages.normalization`). Every loader returns an
`ImageSource`: uint8 images fetched by index, int64 labels, class names.

    python3 -c "from tasks.data import DataConfig, load_split; print(len(load_split(DataConfig(), 'train')))"
"""

from __future__ import annotations

import functools
import gzip
import math
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torchvision import datasets

from tasks.data.config import FASHION_MNIST_DEFAULT_ROOT, DataConfig, DataError, Split, fashion_mnist_not_found
from tasks.data.sources import ImageSet
from tasks.data.image_folder import ImageFolderSource, load_imagefolder
from tasks.normalization import Normalization

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


# --- Fashion-MNIST: IDX files -----------------------------------------------------------

_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_MAGIC = {3: 2051, 1: 2049}  # dims -> magic of an unsigned-byte IDX file


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw"):  # plain folder, torchvision's layout
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _read_idx(path: Path, *, ndim: int) -> np.ndarray:
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read IDX file {path} ({error}); "
                        "replace it with the original file") from error
    header = 4 + 4 * ndim
    magic = int.from_bytes(raw[:4], "big")
    if len(raw) < header or magic != _IDX_MAGIC[ndim]:
        raise DataError(f"{path} is not an IDX file of {ndim}-d unsigned bytes (magic {magic}, expected "
                        f"{_IDX_MAGIC[ndim]}); replace it with the original Fashion-MNIST file")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + math.prod(dims):
        raise DataError(f"{path} holds {len(raw)} bytes but its header {dims} needs "
                        f"{header + math.prod(dims)}; the file is truncated or corrupt, replace it")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _fashion_mnist_files(config: DataConfig, split: Split) -> list[Path]:
    """The split's IDX files: images, then labels (downloaded first when asked and missing)."""
    root = Path(config.root) if config.root is not None else FASHION_MNIST_DEFAULT_ROOT
    image_stem, label_stem = _IDX_FILES[split]
    if config.download and (_find_idx(root, image_stem) is None or _find_idx(root, label_stem) is None):
        _download(datasets.FashionMNIST, root, "Fashion-MNIST")
    image_path, label_path = _find_idx(root, image_stem), _find_idx(root, label_stem)
    if image_path is None or label_path is None:
        raise DataError(fashion_mnist_not_found(root))
    return [image_path, label_path]


def _load_fashion_mnist(config: DataConfig, split: Split) -> ImageSet:
    image_path, label_path = _fashion_mnist_files(config, split)
    images, labels = _read_idx(image_path, ndim=3), _read_idx(label_path, ndim=1)
    if len(images) != len(labels) or images.shape[1] != images.shape[2] or labels.max(initial=0) >= 10:
        raise DataError(f"{image_path} ({images.shape}) and {label_path} ({labels.shape}) do not form "
                        "one Fashion-MNIST split of square images with labels 0-9; replace them")
    return ImageSet(images=torch.from_numpy(images.copy()).unsqueeze(1),  # (N, 1, 28, 28)
                    labels=torch.from_numpy(labels.astype(np.int64)),
                    class_names=FASHION_MNIST_CLASSES)


def _download(dataset: Callable[..., Any], root: Path, title: str) -> None:
    try:
        dataset(str(root), download=True)
    except Exception as error:  # network, disk and checksum failures all surface differently
        raise DataError(f"downloading {title} into {root} failed ({error}); check the internet "
                        "connection, or fetch the files yourself and set data.root") from error


# --- CIFAR-10/100: the official python-pickle folders ------------------------------------

@dataclass(frozen=True)
class _CifarFormat:
    title: str
    folder: str
    files: dict[str, tuple[str, ...]]
    meta: str
    label_key: bytes
    names_key: bytes
    download: Callable[..., Any]


_CIFAR10 = _CifarFormat("CIFAR-10", "cifar-10-batches-py",
                        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)),
                         "test": ("test_batch",)},
                        "batches.meta", b"labels", b"label_names", datasets.CIFAR10)
_CIFAR100 = _CifarFormat("CIFAR-100", "cifar-100-python", {"train": ("train",), "test": ("test",)},
                         "meta", b"fine_labels", b"fine_label_names", datasets.CIFAR100)


class _ArraysOnly(pickle.Unpickler):
    """CIFAR batches hold dicts, lists, strings and numpy arrays; refuse every other global."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"holds {module}.{name}, which a CIFAR batch never does")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[bytes, Any]:
    # Pickle is the official CIFAR format; the restricted unpickler keeps it data-only.
    try:
        with open(path, "rb") as file:
            entry = _ArraysOnly(file, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError) as error:
        raise DataError(f"cannot read CIFAR file {path} ({error}); "
                        "replace it with the original file") from error
    if not isinstance(entry, dict):
        raise DataError(f"{path} is not a CIFAR python-pickle batch; replace it with the original file")
    return entry


def _cifar_files(cifar: _CifarFormat, config: DataConfig, split: Split) -> list[Path]:
    """The meta file, then the split's batch files (downloaded first when asked and missing)."""
    assert config.root is not None  # DataConfig requires it for CIFAR
    root = Path(config.root)
    candidates = (root, root / cifar.folder)  # the folder itself or its parent
    folder = next((c for c in candidates if (c / cifar.meta).is_file()), None)
    if folder is None and config.download:
        _download(cifar.download, root, cifar.title)
        folder = root / cifar.folder
    if folder is None:
        raise DataError(f"{cifar.title} not found: neither {root} nor {root / cifar.folder} holds "
                        f"'{cifar.meta}'; set data.root to the {cifar.folder} folder of the official "
                        "python archive (or its parent), or set data.download=true (needs internet)")
    return [folder / cifar.meta, *(folder / name for name in cifar.files[split])]


def _load_cifar(cifar: _CifarFormat, config: DataConfig, split: Split) -> ImageSet:
    meta_path, *batch_paths = _cifar_files(cifar, config, split)
    folder = meta_path.parent
    meta = _unpickle(meta_path)
    class_names = tuple(name.decode() for name in meta.get(cifar.names_key, []))
    images, labels = [], []
    for path in batch_paths:
        batch = _unpickle(path)
        if b"data" not in batch or cifar.label_key not in batch:
            raise DataError(f"{path} lacks b'data' or {cifar.label_key!r}; replace it with the "
                            f"original {cifar.title} file")
        pixels = np.asarray(batch[b"data"], dtype=np.uint8)  # (n, 3072): R, G, B planes per row
        images.append(pixels.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[cifar.label_key], dtype=np.int64))
    image_array, label_array = np.concatenate(images), np.concatenate(labels)
    in_range = label_array.max(initial=0) < len(class_names)
    if not class_names or len(image_array) != len(label_array) or not in_range:
        raise DataError(f"{folder} holds {len(image_array)} images, {len(label_array)} labels and "
                        f"{len(class_names)} class names, which do not agree; "
                        "replace it with the original files")
    return ImageSet(images=torch.from_numpy(image_array), labels=torch.from_numpy(label_array),
                    class_names=class_names)


# --- Registry and public entry points -----------------------------------------------------

@dataclass(frozen=True)
class _DataSetSpec:
    load: Callable[[DataConfig, Split], ImageSet | ImageFolderSource]
    # The files a split is read from, whose content is its identity (tasks.data.identity); None:
    # a folder of image files, identified by its listing (or content) instead.
    files: Callable[[DataConfig, Split], list[Path]] | None
    # The train split's per-channel mean/std in [0, 1] pixel units, where the data set is one
    # fixed set of files: the streaming pass of tasks.stages.normalization gives these values to 4
    # decimals. None: measured from the train split (imagefolder).
    normalization: Normalization | None


_DATA_SETS: dict[str, _DataSetSpec] = {
    "fashion_mnist": _DataSetSpec(_load_fashion_mnist, _fashion_mnist_files, Normalization((0.2860,), (0.3530,))),
    "cifar10": _DataSetSpec(functools.partial(_load_cifar, _CIFAR10), functools.partial(_cifar_files, _CIFAR10),
                            Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))),
    "cifar100": _DataSetSpec(functools.partial(_load_cifar, _CIFAR100), functools.partial(_cifar_files, _CIFAR100),
                             Normalization((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))),
    "imagefolder": _DataSetSpec(load_imagefolder, None, None),
}


def packaged_files(config: DataConfig, split: Split) -> list[Path] | None:
    """The few files a packaged split (Fashion-MNIST, CIFAR) is read from (validation: the train
    files it is carved from); None for an image folder."""
    files = _DATA_SETS[config.name].files
    return None if files is None else files(config, "test" if split == "test" else "train")


def stored_split(config: DataConfig, split: Literal["train", "val", "test"]) -> ImageSet | ImageFolderSource:
    """A split as the data set stores it (no validation carved, no cut): ``val`` is an ImageFolder's
    own val/ folder (:func:`tasks.data.image_folder.has_own_validation`)."""
    return _DATA_SETS[config.name].load(config, split)


def needs_measured_normalization(config: DataConfig) -> bool:
    """True when neither the config nor the data set gives mean/std: the train split must be measured."""
    return config.mean is None and _DATA_SETS[config.name].normalization is None


def normalization(config: DataConfig) -> Normalization:
    """What `config`'s images are normalised with: data.mean/std, else the data set's known values."""
    if config.mean is not None and config.std is not None:
        return Normalization(config.mean, config.std)
    known = _DATA_SETS[config.name].normalization
    if known is None:
        raise DataError(f"data.mean/std of {config.name} at {config.root} are not resolved; run through the "
                        "pipeline (it measures them from the train split once) or set data.mean and data.std")
    return known
