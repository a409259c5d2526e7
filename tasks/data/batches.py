"""Reading a split's images batch by batch: files decoded in `DataLoader` worker processes.

An in-memory split (Fashion-MNIST, CIFAR) is indexed directly. Any other source (an ImageFolder
tree) is cut into pieces of at most ``DECODE_PIECE`` images; ``runtime.workers`` processes decode
the pieces in order, a few ahead of the consumer, and the pieces are joined back into the
caller's batches. Only those pieces and the current batch are ever in memory, never the split.
On CUDA the pieces come through pinned memory. Decoding is deterministic, so the images are
the same bytes whatever the worker count.

    for index, images in image_batches(train, order.split(256), workers=2, device=device):
        ...  # images: (B, C, H, W) uint8 on device, the rows of `index`
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from tasks.data.config import DataError
from tasks.data.sources import ImageSet, ImageSource

DECODE_PIECE = 32  # images per worker request: small enough to spread a batch over the workers


@dataclass(frozen=True)
class _Failure:
    message: str  # a DataError raised in a worker, sent back as a value so its message stays one line


class _Pieces(Dataset):
    def __init__(self, source: ImageSource, pieces: list[torch.Tensor]) -> None:
        self.source, self.pieces = source, pieces

    def __len__(self) -> int:
        return len(self.pieces)

    def __getitem__(self, i: int) -> torch.Tensor | _Failure:
        try:
            return self.source.images_at(self.pieces[i])
        except DataError as error:
            return _Failure(str(error))


def image_batches(
    source: ImageSource, batches: Sequence[torch.Tensor], *, workers: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(index, images)`` for each index tensor of ``batches``, in order; images ``(B, C, H, W)`` uint8 on ``device``."""
    if isinstance(source, ImageSet):
        for index in batches:
            yield index, source.images_at(index).to(device)
        return
    pieces = [piece for index in batches for piece in index.split(DECODE_PIECE)]
    counts = [len(index.split(DECODE_PIECE)) for index in batches]  # pieces per batch
    workers = min(workers, len(pieces)) if len(pieces) > 1 else 0  # one piece: no process to start
    if multiprocessing.current_process().daemon:
        workers = 0  # a Dask worker is a daemon process, and daemons may not start children
    loader = DataLoader(_Pieces(source, pieces), batch_size=None, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None)
    decoded = iter(loader)
    for index, count in zip(batches, counts):
        parts = [next(decoded) for _ in range(count)]
        failed = next((p for p in parts if isinstance(p, _Failure)), None)
        if failed is not None:
            raise DataError(failed.message)
        yield index, torch.cat(parts).to(device, non_blocking=True)  # pinned on CUDA: the copy overlaps


def read_images(source: ImageSource, index: torch.Tensor, *, workers: int, device: torch.device) -> torch.Tensor:
    """The ``(B, C, H, W)`` uint8 images at ``index``, decoded by up to ``workers`` processes."""
    return next(image_batches(source, [index], workers=workers, device=device))[1]
