"""ImageFolder figures for the benchmark: decode rate by worker count, the peak memory of a
class-statistics pass, and the time to take the train split's identity, all on a JPEG folder
written from the installed Fashion-MNIST files.

    python -m tasks.bench.imagefolder --folder /tmp/fm-jpeg --workers 1 2        # images/s
    python -m tasks.bench.imagefolder --folder /tmp/fm-jpeg --memory --workers 2  # stats pass, 60k images
    python -m tasks.bench.imagefolder --folder /tmp/fm-jpeg --identity            # listing and content digests

The folder is ``train/<k>_<class>/*.jpg`` and ``val/<k>_<class>/*.jpg`` (28x28 grayscale JPEGs,
quality 95), so ``data.name=imagefolder data.root=<folder> data.image_size=28`` reads it.
"""

from __future__ import annotations

import argparse
import os
import re
import threading
import time
from pathlib import Path

import psutil
import torch
from PIL import Image

from tasks.data import DataConfig, ImageSource, load_split
from tasks.data.batches import image_batches


def class_folder_names(class_names: tuple[str, ...]) -> list[str]:
    """``0_t_shirt_top``, ``1_trouser``, ...: file-system safe, sorted in label order (up to 10 classes)."""
    return [f"{k}_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}" for k, name in enumerate(class_names)]


def write_jpeg_split(source: ImageSource, folder: Path, *, quality: int = 95) -> None:
    """Every image of ``source`` as ``folder/<class folder>/<index>.jpg``."""
    names = class_folder_names(source.class_names)
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for index in torch.arange(len(source)).split(1000):
        images = source.images_at(index)  # (B, C, H, W) uint8
        for i, image, label in zip(index.tolist(), images, source.labels[index].tolist()):
            pixels = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(folder / names[label] / f"{i:05d}.jpg", quality=quality)


def write_fashion_jpeg_folder(
    root: Path, *, train_per_class: int | None = None, test_limit: int | None = None, fashion_root: str | None = None
) -> Path:
    """``root/train`` and ``root/val`` as JPEG class folders from Fashion-MNIST (written once; reused after)."""
    done = root / ".complete"
    if not done.is_file():
        data = DataConfig(root=fashion_root, train_per_class=train_per_class, test_limit=test_limit)
        write_jpeg_split(load_split(data, "train"), root / "train")
        write_jpeg_split(load_split(data, "test"), root / "val")
        done.write_text("")
    return root


def decode_rate(source: ImageSource, *, workers: int, batch_size: int = 256) -> float:
    """Images/s of one pass over ``source`` through :func:`image_batches` (worker start-up included)."""
    started = time.perf_counter()
    for _ in image_batches(source, torch.arange(len(source)).split(batch_size), workers=workers,
                           device=torch.device("cpu")):
        pass
    return len(source) / (time.perf_counter() - started)


def decode_rates(folder: Path, worker_counts: list[int], *, passes: int = 3, image_size: int = 28) -> dict[int, float]:
    """Best images/s of ``passes`` rounds per worker count; the rounds alternate between counts so a
    slow minute of the shared machine does not fall on one count only."""
    source = load_split(DataConfig(name="imagefolder", root=str(folder), image_size=image_size), "train")
    best = {n: 0.0 for n in worker_counts}
    for _ in range(passes):
        for n in worker_counts:
            best[n] = max(best[n], decode_rate(source, workers=n))
    return best


def worker_counts() -> list[int]:
    """1, 2, and 4 and 8 where the machine has that many cores."""
    return [1, 2] + [n for n in (4, 8) if n <= (os.cpu_count() or 1)]


class PeakMemory:
    """Samples the resident memory of this process plus all its children every ``interval`` s:
    the sum of RSS (shared pages counted once per process) and of PSS (shared pages split)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak_rss, self.peak_pss = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            rss = pss = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    info = process.memory_full_info()
                except psutil.Error:
                    continue  # a worker that just exited
                rss, pss = rss + info.rss, pss + info.pss
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def stats_pass_peak_memory(folder: Path, *, workers: int, image_size: int = 28) -> dict[str, float]:
    """Peak memory (MB) of a class-statistics pass, as the stage runs it, over the folder's train split."""
    from tasks.models import create_model
    from tasks.normalization import Normalization
    from tasks.stages.stats import StatsConfig, class_bn_stats

    data = DataConfig(name="imagefolder", root=str(folder), image_size=image_size)
    with PeakMemory() as memory:
        started = time.perf_counter()
        train = load_split(data, "train")
        model = create_model("convnet", channels=train.channels, num_classes=train.num_classes,
                             image_size=train.image_size, width=32, depth=3)
        class_bn_stats(model, train, StatsConfig(), augment=data.augment, norm=Normalization((0.286,), (0.353,)),
                       seed=0, device=torch.device("cpu"), workers=workers)
        seconds = time.perf_counter() - started
    return {"images": float(len(train)), "seconds": seconds, "peak_rss_mb": memory.peak_rss / 2**20,
            "peak_pss_mb": memory.peak_pss / 2**20}


def identity_seconds(folder: Path, *, mode: str, passes: int = 3, image_size: int = 28) -> tuple[float, int]:
    """Best seconds of ``passes`` identities of the folder's train split (listing: a fresh memo each
    pass, nothing to remember; content: the first pass reads every file, later ones find the memo)."""
    from tasks.data.identity import DigestMemo, split_identity

    data = DataConfig(name="imagefolder", root=str(folder), image_size=image_size, identity=mode)
    memo = DigestMemo(folder.parent / f".{folder.name}-bench-memo.json")
    best, images = float("inf"), 0
    for _ in range(passes):
        started = time.perf_counter()
        images = split_identity(data, "train", memo=memo).images
        best = min(best, time.perf_counter() - started)
    return best, images


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.bench.imagefolder", description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="where the JPEG folder is (written if missing)")
    parser.add_argument("--workers", type=int, nargs="+", default=worker_counts())
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="peak memory of a stats pass instead of decode rates")
    parser.add_argument("--identity", action="store_true", help="seconds to take the train split's identity")
    args = parser.parse_args()
    write_fashion_jpeg_folder(args.folder)
    if args.identity:
        for mode in ("listing", "content"):
            first, images = identity_seconds(args.folder, mode=mode, passes=1)
            best, _ = identity_seconds(args.folder, mode=mode, passes=args.passes)
            print(f"{mode}: {images:,} files, first {first:.2f} s, best of {args.passes} {best:.2f} s", flush=True)
        return
    if args.memory:
        for n in args.workers:
            print(f"workers={n}", stats_pass_peak_memory(args.folder, workers=n), flush=True)
        return
    rates = decode_rates(args.folder, args.workers, passes=args.passes)
    for n, rate in rates.items():
        print(f"workers={n}: {rate:,.0f} images/s ({rate / rates[args.workers[0]]:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
