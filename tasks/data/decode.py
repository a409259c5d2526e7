"""One image file to uint8 pixels: the one decode path of ImageFolder splits and class-folder trees.

An image is converted to the data set's channels (PIL ``L`` or ``RGB``); one of another size has
its shorter side resized to the data set's size (bilinear) and is centre-cropped to a square,
so a folder of mixed sizes gives one size. An image already of the size is left as it is.

    check_readable(paths)                                        # headers (and a JPEG's end): DataError naming the file
    picture = open_image(path, channels=3)                       # DataError naming the file
    pixels = to_pixels(fit_to_size(picture, 64), channels=3)     # (3, 64, 64) uint8
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from tasks.data.config import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff"})
MODES = {1: "L", 3: "RGB"}
JPEG_TAIL = 64  # bytes of a JPEG's end searched for its end-of-image marker


def undecodable(path: Path, error: Exception) -> DataError:
    return DataError(f"cannot decode image {path} ({error}); replace or delete the file")


def open_image(path: Path, *, channels: int) -> Image.Image:
    """The image at ``path`` in the data set's channels; DataError naming the file when it does not decode."""
    try:
        with Image.open(path) as image:
            return image.convert(MODES[channels])
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise undecodable(path, error) from error


def check_readable(paths: Iterable[Path]) -> None:
    """Each file's header (and, for PNG, its chunk checksums) read without decoding the pixels, and a
    JPEG's end: DataError naming the first file that is not an image PIL can read. A JPEG cut short
    (a copy or download that stopped) lacks the end-of-image marker its encoder writes last, found
    by reading the file's last bytes; damage inside the compressed data is found when it is decoded."""
    for path in paths:
        try:
            with Image.open(path) as image:
                jpeg = image.format == "JPEG"
                image.verify()
            if jpeg and not _ends_like_jpeg(path):
                raise OSError("the file ends before the JPEG's end-of-image marker: it is truncated")
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
            raise undecodable(path, error) from error


def _ends_like_jpeg(path: Path) -> bool:
    """True when the end-of-image marker FF D9 is in the file's last bytes (some writers pad after it)."""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - JPEG_TAIL), 0)
        return b"\xff\xd9" in handle.read().rstrip(b"\0")


def fit_to_size(picture: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size`` (bilinear), then a centre crop to ``size`` x ``size``."""
    import torchvision.transforms.functional as TF  # here: the other checks of this module load without torch

    if min(picture.size) != size:  # already the size: resizing would only copy it
        picture = TF.resize(picture, size, interpolation=TF.InterpolationMode.BILINEAR)
    if picture.size != (size, size):
        picture = TF.center_crop(picture, size)
    return picture


def to_pixels(picture: Image.Image, *, channels: int) -> np.ndarray:
    """A picture as ``(C, H, W)`` uint8: a C-contiguous, writable copy."""
    width, height = picture.size
    return np.array(np.asarray(picture).reshape(height, width, channels).transpose(2, 0, 1), order="C")


def decode_image(path: Path, *, size: int, channels: int) -> np.ndarray:
    """``(channels, size, size)`` uint8 pixels of the file at ``path``, whatever its size."""
    return to_pixels(fit_to_size(open_image(path, channels=channels), size), channels=channels)
