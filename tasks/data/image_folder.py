"""ImageFolder trees (ImageNet, Tiny-ImageNet, your own folder): listing, checking and decoding.

``root/train/<class>/*`` gives the classes (sorted folder names) and the train split; the test
split is ``root/val/<class>/*`` with the same class names, or Tiny-ImageNet's
``root/val/images/*`` with ``root/val/val_annotations.txt``. Listing a split opens no image
(apart from one per class to tell grayscale from colour); images are decoded on each
``images_at`` (:mod:`tasks.data.decode`), in DataLoader workers when read through
:mod:`tasks.data.batches`.

    python3 -c "from tasks.data import *; print(len(load_split(DataConfig(name='imagefolder', root='/data/tiny'), 'test')))"
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from tasks.data.config import IMAGEFOLDER_DEFAULT_SIZE, DataConfig, DataError, Split
from tasks.data.decode import IMAGE_SUFFIXES, decode_image

logger = logging.getLogger("distillery")
_WARNED: set[tuple[Path, tuple[str, ...]]] = set()  # the partial test splits this process has warned of


@dataclass(frozen=True)
class ImageFolderSource:
    """A split of image files, decoded, resized and centre-cropped on each `images_at`.

    Every image, whatever its size, has its shorter side resized to ``image_size`` and is then
    centre-cropped to a square, so a folder of mixed sizes gives one size. The file names are
    one numpy string array (no Python object per file), so forked decoding workers share them.
    """

    files: np.ndarray  # (N,) str: absolute paths
    labels: torch.Tensor  # (N,) int64
    class_names: tuple[str, ...]
    image_size: int
    channels: int = 3
    annotations: tuple[Path, ...] = ()  # files besides the images that say which is which (Tiny-ImageNet's val)

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(Path(f) for f in self.files)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.files)

    def images_at(self, index: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.from_numpy(decode_image(Path(self.files[i]), size=self.image_size,
                                                          channels=self.channels))
                            for i in index.tolist()])  # (B, C, S, S) uint8

    def select(self, index: torch.Tensor) -> ImageFolderSource:
        return replace(self, files=self.files[index.numpy()], labels=self.labels[index])


def _class_dirs(folder: Path) -> list[Path]:
    """The class folders in ``folder``, sorted; hidden ones (``.ipynb_checkpoints``, ``.Trash``) are not classes."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[str]:
    """Every image file under ``folder`` (subfolders too, not through symlinked ones), as paths in
    path order; hidden entries (``.ipynb_checkpoints/``, macOS ``._*`` files) are not data. One
    ``scandir`` per folder and no ``stat`` per file: 60,000 files list in well under a second."""
    found, pending = [], [str(folder)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and entry.is_file():
                    found.append(entry.path)
    return sorted(found, key=lambda path: path.split(os.sep))  # as Paths sort: part by part


_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def _detect_channels(first_images: list[str | None]) -> int:
    """1 when the first image of every train class is grayscale, else 3 (one colour image decides)."""
    for first in first_images:
        if first is None:
            continue
        try:
            with Image.open(first) as image:
                mode = image.mode
        except (OSError, UnidentifiedImageError, SyntaxError):
            continue  # decoding it names the file, when it is read
        if mode not in _GRAYSCALE_MODES:
            return 3
    return 1


def _check_val_classes(found: set[str], class_names: tuple[str, ...], where: Path) -> None:
    # A warning, not an error: a test split of some classes is legitimate, but the user should know.
    missing = [name for name in class_names if name not in found]
    if missing and (where, tuple(missing)) not in _WARNED:  # a run lists the split several times: say it once
        _WARNED.add((where, tuple(missing)))
        logger.warning("%s has no test images of %d of the %d train/ classes (e.g. %s): test top-1 scores the "
                       "others only; add val/<class>/ images to score every class", where, len(missing),
                       len(class_names), missing[:5])


def has_own_validation(config: DataConfig) -> bool:
    """An ImageFolder with ``test/`` beside ``val/``: then ``val/`` is the validation split (nothing is
    carved from train) and ``test/`` the test split; otherwise ``val/`` is the test split."""
    return config.name == "imagefolder" and config.root is not None and (Path(config.root) / "test").is_dir()


EXPECTED = ("expected root/train/<class>/*.JPEG and root/val/<class>/*.JPEG (and optionally root/test/<class>/*.JPEG), "
            "or Tiny-ImageNet's root/val/images/*.JPEG with root/val/val_annotations.txt")


def load_imagefolder(config: DataConfig, split: Split) -> ImageFolderSource:
    """``train/``; ``test``: ``test/`` if present, else ``val/`` (class folders or Tiny-ImageNet's
    annotations); ``val``: ``val/`` when ``test/`` is present (:func:`has_own_validation`)."""
    assert config.root is not None  # DataConfig requires it for imagefolder
    root = Path(config.root)
    if not root.is_dir():
        raise DataError(f"imagefolder root {root} is not a folder; set data.root to the folder holding train/ and val/")
    train_dir = root / "train"
    class_dirs = _class_dirs(train_dir) if train_dir.is_dir() else []
    if not class_dirs:
        raise DataError(f"imagefolder root {root} has no train/ subfolder with one folder per class; {EXPECTED}")
    if len(class_dirs) == 1:
        raise DataError(f"{train_dir} holds one class folder ({class_dirs[0].name}): a classifier needs at least two "
                        f"classes; add a folder per class. {EXPECTED}")
    class_names = tuple(d.name for d in class_dirs)
    label_of = {name: label for label, name in enumerate(class_names)}
    train_files = [_image_files(class_dir) for class_dir in class_dirs] if split == "train" or not config.channels else []
    labelled_by: tuple[Path, ...] = ()
    if split == "train":
        samples = []
        for class_dir, files in zip(class_dirs, train_files):
            if not files:
                raise DataError(f"class folder {class_dir} holds no images "
                                f"({'/'.join(sorted(IMAGE_SUFFIXES))}); add some or remove it")
            samples += [(path, label_of[class_dir.name]) for path in files]
    else:
        folder = root / "test" if split == "test" and (root / "test").is_dir() else root / "val"
        samples, labelled_by = _labelled_split(folder, label_of, class_names, root=root, split=split)
    if not samples:
        raise DataError(f"imagefolder root {root} holds no {split} images; {EXPECTED}")
    return ImageFolderSource(files=np.array([path for path, _ in samples]),
                             labels=torch.tensor([label for _, label in samples], dtype=torch.int64),
                             class_names=class_names,
                             image_size=config.image_size or IMAGEFOLDER_DEFAULT_SIZE,
                             channels=config.channels or _detect_channels([f[0] if f else None for f in train_files]),
                             annotations=labelled_by)


def _labelled_split(folder: Path, label_of: dict[str, int], class_names: tuple[str, ...], *, root: Path,
                    split: str) -> tuple[list[tuple[str, int]], tuple[Path, ...]]:
    """The (file, label) pairs of a held-out folder: class folders named as in train/, or Tiny-ImageNet's
    ``images/`` with ``val_annotations.txt`` (returned too: it says which image is which)."""
    annotations = folder / "val_annotations.txt"
    if annotations.is_file():  # Tiny-ImageNet: "filename<TAB>wnid<TAB>box..." per line
        rows = [line.split("\t")[:2] for line in annotations.read_text().splitlines() if line.strip()]
        bad = [row for row in rows if len(row) < 2 or row[1] not in label_of]
        if bad:
            raise DataError(f"{annotations} has {len(bad)} lines without a train/ class, e.g. {bad[0]}; "
                            "expected 'filename<TAB>wnid' lines whose wnid is a folder in train/")
        samples = [(str(folder / "images" / row[0]), label_of[row[1]]) for row in rows]
        absent = [path for path, _ in samples if not os.path.isfile(path)]
        if absent:
            raise DataError(f"{annotations} names {len(absent)} files that do not exist, e.g. {absent[0]}; "
                            "restore them or remove their lines")
        _check_val_classes({row[1] for row in rows}, class_names, annotations)
        return samples, (annotations,)
    if not folder.is_dir():
        raise DataError(f"imagefolder root {root} has no {folder.name}/ subfolder for the {split} split; {EXPECTED}")
    held_out = _class_dirs(folder)
    unknown = [d.name for d in held_out if d.name not in label_of]
    if unknown or not held_out:
        raise DataError(f"{folder} must hold class folders named as in train/; {len(unknown)} are not "
                        f"(e.g. {unknown[:5]}): rename or remove them. {EXPECTED}")
    samples = [(path, label_of[d.name]) for d in held_out for path in _image_files(d)]
    _check_val_classes({class_names[label] for _, label in samples}, class_names, folder)
    return samples, ()
