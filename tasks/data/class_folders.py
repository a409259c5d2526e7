"""Class-folder trees of images: what `synthesis.mode=imported` reads and `distillery export` writes.

A tree holds one folder per class of the data set, named by the class name (:func:`class_folder`:
a ``/`` becomes ``_``, so Fashion-MNIST's ``T-shirt/top`` is ``T-shirt_top``), each with the same
number of images (PNG, JPEG, ...; other files are ignored). Image ``i`` of a class is its
``i``-th file in name order, and the image store holds classes in the data set's order, so the
set's IPC is the count per class (``synthesis.ipc`` must say the same). The set is named by its
content: :func:`folder_digest` hashes the files' bytes in store order, never their paths or
times. Decoding converts each image to the data set's channels (PIL ``L`` or ``RGB``); an image
of another size is refused unless ``synthesis.import_resize`` is set (then: shorter side to the
data set's size, bilinear, centre crop, as ImageFolder data is read). Export writes PNGs named
by store index, so an exported set imports back to the same bytes.

    folder = scan_class_folders("released/", class_names=train.class_names, ipc=10)
    images = decode_class_folders(folder, channels=1, image_size=28, resize=False)  # (N, 1, 28, 28) uint8
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from tasks.data.config import DataConfig, DataError
from tasks.data.decode import IMAGE_SUFFIXES, fit_to_size, open_image, to_pixels


class ImportedImagesError(DataError):
    """A class-folder tree that cannot be imported; the message names the file or folder and the fix."""


def class_folder(class_name: str) -> str:
    """The folder name of a class: its name with path separators replaced by ``_``."""
    return class_name.replace("/", "_").replace("\\", "_")


@dataclass(frozen=True)
class ClassFolders:
    """The image files of a tree, per class in the data set's order, each class's in name order."""

    root: Path
    files: tuple[tuple[Path, ...], ...]

    @property
    def ipc(self) -> int:
        return len(self.files[0])

    def paths(self) -> list[Path]:
        """Every file in image-store order (class by class)."""
        return [path for class_files in self.files for path in class_files]


def _images_in(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.iterdir()
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")))


def scan_class_folders(root: str | Path, *, class_names: Sequence[str], ipc: int | None) -> ClassFolders:
    """List the tree at ``root``; refuse foreign or missing class folders, empty classes, unequal
    counts and (when ``ipc`` is given) a count other than ``ipc``."""
    root = Path(root)
    wanted = [class_folder(name) for name in class_names]
    if not root.is_dir():
        raise ImportedImagesError(f"synthesis.import_root {root} is not a folder; point it at a folder holding one "
                                  f"subfolder of images per class ({', '.join(wanted[:3])}, ...)")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    loose = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        raise ImportedImagesError(f"{loose[0]} lies directly in {root}; move every image into its class's folder "
                                  f"({', '.join(wanted[:3])}, ...)")
    found = {p.name for p in entries if p.is_dir()}
    foreign, missing = sorted(found - set(wanted)), [name for name in wanted if name not in found]
    if foreign or missing:
        listed = ", ".join(wanted[:12]) + (f", ... ({len(wanted)} in all)" if len(wanted) > 12 else "")
        raise ImportedImagesError(
            f"the class folders of {root} do not match the data set's classes (unknown: {foreign[:5]}, missing: "
            f"{missing[:5]}); name one folder per class exactly: {listed}")
    files = tuple(_images_in(root / name) for name in wanted)
    for name, class_files in zip(wanted, files):
        if not class_files:
            raise ImportedImagesError(f"class folder {root / name} holds no images ({'/'.join(sorted(IMAGE_SUFFIXES))}); "
                                      "every class needs the same number of images")
    counts = [len(class_files) for class_files in files]
    usual = Counter(counts).most_common(1)[0][0]
    odd = [f"{name}: {count}" for name, count in zip(wanted, counts) if count != usual]
    if odd:
        raise ImportedImagesError(f"the class folders of {root} hold different numbers of images (most hold {usual}; "
                                  f"{', '.join(odd[:5])}{', ...' if len(odd) > 5 else ''}); an image set has one IPC, "
                                  "so give every class the same number of images")
    folders = ClassFolders(root, files)
    if ipc is not None and ipc != folders.ipc:
        raise ImportedImagesError(f"synthesis.ipc={ipc}, but {root} holds {folders.ipc} images in every class; "
                                  f"set synthesis.ipc={folders.ipc}")
    return folders


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ImportedImagesError(f"cannot read image {path} ({err}); fix its permissions or replace it") from None


def folder_digest(folders: ClassFolders) -> str:
    """A hash of the files' bytes in image-store order (and of their classes): the set's identity."""
    digest = hashlib.sha256()
    for label, class_files in enumerate(folders.files):
        for path in class_files:
            digest.update(f"{label}:".encode() + hashlib.sha256(_read(path)).digest())
    return digest.hexdigest()[:32]


def decode_class_folders(folders: ClassFolders, *, channels: int, image_size: int, resize: bool) -> np.ndarray:
    """(N, channels, image_size, image_size) uint8 images in store order; unreadable files and (without
    ``resize``) images of another size are refused, naming the file."""
    paths = folders.paths()
    images = np.zeros((len(paths), channels, image_size, image_size), np.uint8)
    wrong_size = []
    for i, path in enumerate(paths):
        try:
            picture = open_image(path, channels=channels)
        except DataError as err:
            raise ImportedImagesError(f"{err} (every class still needs the same number of images)") from None
        if picture.size != (image_size, image_size):
            if not resize:
                wrong_size.append((path, picture.size))
                continue
            picture = fit_to_size(picture, image_size)
        images[i] = to_pixels(picture, channels=channels)
    if wrong_size:
        path, (width, height) = wrong_size[0]
        raise ImportedImagesError(
            f"{len(wrong_size)} of {len(paths)} images in {folders.root} are not {image_size}x{image_size} like the "
            f"data set's, e.g. {path} ({width}x{height}); resize them, or set synthesis.import_resize=true to resize "
            f"on import (shorter side to {image_size}, centre crop)")
    return images


def import_images(root: str | Path, *, class_names: Sequence[str], ipc: int, channels: int, image_size: int,
                  resize: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """The (N, C, S, S) uint8 images, (N,) class labels and content digest of the tree at ``root``."""
    folders = scan_class_folders(root, class_names=class_names, ipc=ipc)
    images = decode_class_folders(folders, channels=channels, image_size=image_size, resize=resize)
    labels = np.repeat(np.arange(len(class_names)), folders.ipc)
    return images, labels, folder_digest(folders)


def write_class_folders(images: np.ndarray, labels: np.ndarray, *, class_names: Sequence[str], dest: Path) -> None:
    """Write (N, C, H, W) uint8 ``images`` as ``dest/<class folder>/<store index>.png``, in store order."""
    width = max(5, len(str(len(images) - 1)))
    for name in class_names:
        (dest / class_folder(name)).mkdir(parents=True)
    for index, (image, label) in enumerate(zip(images, labels)):
        pixels = image.transpose(1, 2, 0)  # (H, W, C)
        picture = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        picture.save(dest / class_folder(class_names[int(label)]) / f"{index:0{width}d}.png", format="PNG")


def check_import(data: DataConfig, *, root: str, ipc: int, resize: bool) -> None:
    """Every refusal of `synthesis.mode=imported`, found before any stage runs (the CLI's preflight)."""
    from tasks.data.splits import load_split  # torch: imported here so that exports' checks load without it

    train = load_split(data, "train")
    import_images(root, class_names=train.class_names, ipc=ipc, channels=train.channels,
                  image_size=train.image_size, resize=resize)
