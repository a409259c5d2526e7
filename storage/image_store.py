"""The synthetic-image store: one Zarr v3 group per image set.

``images [N, C, H, W] uint8`` (one chunk per class: images are ordered by class, IPC each),
``labels [N] int16``, optional small arrays such as ``loss_curve [units, points, 3] float32`` (the
synthesis loss curve of each unit), and attributes (format version, mode, IPC, class count, provenance).
Zstd with its checksum on, so a damaged chunk fails loudly instead of decoding to noise;
metadata consolidated into the group's zarr.json once written.

    write_image_store(url, images, labels, attributes={"mode": "lpld", "ipc": 10, ...})
    images, labels, attributes = read_image_store(url)
"""

from __future__ import annotations

import base64
import warnings
from typing import Any

import numpy as np
import zarr

from storage.artifacts import rebuild_advice
from storage.locations import zarr_store

FORMAT_VERSION = 1
COMPRESSOR = zarr.codecs.ZstdCodec(level=3, checksum=True)


class ImageStoreError(RuntimeError):
    """An image store that cannot be read; the message names it and the fix."""


def write_image_store(
    url: str, images: np.ndarray, labels: np.ndarray, *, images_per_chunk: int, attributes: dict[str, Any],
    extra_arrays: dict[str, np.ndarray] | None = None,
) -> None:
    """Write the whole store at once (mode "w": a half-written earlier attempt is replaced).

    ``extra_arrays`` are small arrays stored whole beside the images (e.g. synthesis loss curves).
    """
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (images.shape[0],):
        raise ValueError(f"expected uint8 images (N, C, H, W) and labels (N,), got {images.shape} {images.dtype}, {labels.shape}")
    group = zarr.open_group(zarr_store(url), mode="w")
    group.create_array(
        "images", data=images, chunks=(images_per_chunk, *images.shape[1:]), compressors=COMPRESSOR
    )
    group.create_array("labels", data=labels.astype(np.int16), chunks=labels.shape, compressors=COMPRESSOR)
    for name, array in (extra_arrays or {}).items():
        group.create_array(name, data=array, chunks=array.shape, compressors=COMPRESSOR)
    group.attrs.update({"format_version": FORMAT_VERSION, **attributes})
    consolidate(url)


def consolidate(url: str) -> None:
    """Gather every array's metadata into the group's zarr.json, so opening a finished store
    is one read (many fewer requests on object storage). Called once a store is complete.

    Image stores only: the copy of every array's metadata is ~9 KB, a fifth of a 40x-pruned
    label store, whose bytes on disk are the figure the method is judged by."""
    with warnings.catch_warnings():  # zarr notes that v3 consolidation is outside the spec; we read it ourselves
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(zarr_store(url))


def read_image_store(url: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    try:
        group = zarr.open_group(zarr_store(url), mode="r")
        images, labels = group["images"][:], group["labels"][:].astype(np.int64)
    except (FileNotFoundError, KeyError) as err:
        raise ImageStoreError(f"image store {url} is missing or incomplete ({err}); rerun the synthesize stage") from None
    except Exception as err:  # noqa: BLE001 - codec errors (checksum mismatch) come in several types
        raise ImageStoreError(f"image store {url} is damaged ({type(err).__name__}: {err}); "
                              f"{rebuild_advice(url.rstrip('/').rsplit('/', 1)[0])}") from None
    return images, labels, dict(group.attrs)


GRID_PER_CLASS = 50  # the most images of a class a grid shows (a whole real split would be 100,000s of px wide)


def grid_png(images: np.ndarray, *, per_row: int, scale: int = 2) -> bytes:
    """A PNG of ``images`` (N, C, H, W) uint8, ``per_row`` to a row (one class per row), 1 px gaps; of a
    row longer than ``GRID_PER_CLASS`` only its first ``GRID_PER_CLASS`` images are drawn."""
    from io import BytesIO

    from PIL import Image

    if per_row > GRID_PER_CLASS:
        images, per_row = images[np.arange(len(images)) % per_row < GRID_PER_CLASS], GRID_PER_CLASS
    n, channels, height, width = images.shape
    rows = -(-n // per_row)
    canvas = np.full((rows * (height + 1) + 1, per_row * (width + 1) + 1, channels), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        top, left = 1 + (i // per_row) * (height + 1), 1 + (i % per_row) * (width + 1)
        canvas[top : top + height, left : left + width] = image.transpose(1, 2, 0)
    picture = Image.fromarray(canvas.squeeze(2) if channels == 1 else canvas)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI, for markdown shown where relative and file:// links do not open."""
    return f"data:image/png;base64,{base64.b64encode(png).decode()}"
