"""Side-by-side rates for the benchmark: each stage against its own limit, same process, same data.

* relabel: :func:`tasks.stages.relabel.label_steps` (sampling, augmentation, forward, encoding) against
  the bare teacher forward over the identical, already-augmented batches;
* student: :func:`tasks.stages.evaluate.train_student` reading labels from the Zarr store against the
  same training over the store's arrays already in memory;
* layout: student steps with the channels-last (NHWC) weights every model is built with against
  the same student in NCHW, on identical replayed batches;
* label stores: random-order step reads through the reader against in-memory arrays and
  against raw ``.npy`` rows.

Each figure is the best of ``passes`` rounds (the least disturbed by the rest of the machine).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch
from torch import nn

from storage.softlabels import SoftLabelReader
from tasks.labels.replay import ReplayedSteps, StudentStep
from tasks.labels.stream import StreamGeometry, apply_augmentation, sample_augmentation, step_images, step_seed
from tasks.runtime import RuntimeConfig
from tasks.stages.evaluate import EvaluateConfig, train_student
from tasks.stages.evaluate.students import build_student, create_optimizer, soft_label_loss, student_lr
from tasks.stages.relabel import RelabelConfig, label_steps, store_layout
from tasks.training import run_steps

T = TypeVar("T")


def timed(run: Callable[[], T]) -> tuple[float, T]:
    """The wall seconds ``run()`` took, and what it returned: the one timer of the benchmarks."""
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def alternating_best(first: Callable[[], object], second: Callable[[], object], passes: int) -> tuple[float, float]:
    """Best seconds of each side over ``passes`` rounds that alternate (first, second, first, ...),
    so warm-up and a slow minute of the machine fall on both sides, not on one."""
    first_s = second_s = float("inf")
    for _ in range(passes):
        first_s = min(first_s, timed(first)[0])
        second_s = min(second_s, timed(second)[0])
    return first_s, second_s


def relabel_vs_forward(
    model: nn.Module, images: torch.Tensor, config: RelabelConfig, *, num_classes: int, steps: int, seed: int,
    crop_scale_min: float, passes: int = 3,
) -> dict[str, float]:
    """Samples/s of the relabel inner loop and of the bare forward on the same batches."""
    geometry = StreamGeometry(len(images), config.batch_size, config.epochs)
    steps = min(steps, geometry.total_steps)
    layout = store_layout(config, steps=steps, num_classes=num_classes)
    batches = []
    for step_id in range(steps):
        index = step_images(seed, step_id, geometry)
        aug = sample_augmentation(step_seed(seed, step_id), n=len(index), image_size=images.shape[-1],
                                  crop_scale_min=crop_scale_min, cutmix=config.cutmix)
        batches.append(apply_augmentation(images[index.to(images.device)], aug))
    samples = sum(len(b) for b in batches)

    def bare() -> None:
        with torch.no_grad():  # float32, as relabel labels
            for batch in batches:
                model(batch).float().cpu()

    def relabel() -> None:
        label_steps(model, images, range(steps), config=config, layout=layout, geometry=geometry, seed=seed,
                    crop_scale_min=crop_scale_min)

    bare_s, relabel_s = alternating_best(bare, relabel, passes)
    return {"relabel samples/s": samples / relabel_s, "forward samples/s": samples / bare_s,
            "ratio": bare_s / relabel_s}


class InMemoryLabels(SoftLabelReader):
    """The store's arrays read whole into memory first; the same decode path after that."""

    def __init__(self, url: str, **kwargs: object) -> None:
        super().__init__(url, **kwargs)
        self.whole = {name: array[:] for name, array in self.arrays.items()}

    def rows(self, step: int) -> dict[str, np.ndarray]:
        return {name: array[step] for name, array in self.whole.items()}


def student_store_vs_memory(
    images: torch.Tensor, url: str, config: EvaluateConfig, *, num_classes: int, runtime: RuntimeConfig,
    passes: int = 3,
) -> dict[str, float]:
    """Student steps/s reading from the Zarr store against from memory (``config.steps`` steps each)."""
    steps = config.total_steps(SoftLabelReader(url).attrs["steps_per_epoch"])
    in_memory = InMemoryLabels(url)  # loaded before the clock starts: the baseline is pure memory

    def train(reader: Callable[[], SoftLabelReader]) -> Callable[[], object]:
        return lambda: train_student(images, reader(), config, num_classes=num_classes, seed=0, runtime=runtime)

    # Alternating rounds: measured one side after the other, warm-up alone favours the second by
    # about 0.2 of the ratio, while a profile puts the reader under 2 % of a step.
    store_s, memory_s = alternating_best(train(lambda: SoftLabelReader(url)),  # opened per round: cold caches
                                         train(lambda: in_memory), passes)
    return {"store steps/s": steps / store_s, "memory steps/s": steps / memory_s, "ratio": memory_s / store_s}


def channels_last_vs_nchw(
    images: torch.Tensor, url: str, config: EvaluateConfig, *, num_classes: int, steps: int = 400, passes: int = 3,
) -> dict[str, float]:
    """Student steps/s with channels-last weights (as :func:`tasks.models.create_model` builds them)
    against NCHW weights: the same student, optimizer and ``steps`` replayed batches, made before the clock."""
    batches = list(ReplayedSteps(images, SoftLabelReader(url), seed=0, steps=steps))

    def train(layout: torch.memory_format) -> Callable[[], object]:
        def run() -> object:
            student = build_student(config, images, num_classes=num_classes, seed=0).to(memory_format=layout)
            optimizer = create_optimizer(student, config)

            def loss_of(step: StudentStep) -> torch.Tensor:
                return soft_label_loss(student(step.images).float(), step.teacher_logits, config)

            return run_steps(batches, loss_of, optimizer, student_lr(config, total=steps, steps_per_epoch=1))
        return run

    nhwc_s, nchw_s = alternating_best(train(torch.channels_last), train(torch.contiguous_format), passes)
    return {"channels-last steps/s": steps / nhwc_s, "nchw steps/s": steps / nchw_s, "ratio": nchw_s / nhwc_s}


def _read_rate(reader: SoftLabelReader, order: np.ndarray) -> float:
    started = time.perf_counter()
    samples = 0
    for step in order:
        samples += len(reader.step(int(step)).logits)  # a stream store keeps no image_index
    return samples / (time.perf_counter() - started)


def _raw_numpy_mb_s(reader: InMemoryLabels, order: np.ndarray, folder: Path) -> tuple[float, int]:
    """Random rows of the same arrays saved as plain .npy files (memory-mapped): MB/s, bytes per step."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in reader.whole.items():
        np.save(folder / f"{name}.npy", array)
    mapped = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in reader.whole}
    row_bytes = sum(a[0].nbytes for a in mapped.values())
    started = time.perf_counter()
    for step in order:
        for array in mapped.values():
            np.array(array[int(step)])
    return row_bytes * len(order) / (time.perf_counter() - started) / 1e6, row_bytes


def label_store_reads(root: str, *, passes: int = 3, reads: int = 20000, seed: int = 0) -> list[dict[str, object]]:
    """One row per soft-label store under ``root``: format, bytes per step on disk, and random-order
    read rates (steps drawn with replacement, as the student draws them) through a freshly opened
    reader (chunk decoding included) against the same decode over in-memory arrays and against
    raw .npy rows."""
    rows = []
    for url in sorted(str(p) for p in Path(root).glob("*/*/labels.zarr")):
        memory_reader = InMemoryLabels(url)
        order = np.random.default_rng(seed).integers(0, memory_reader.num_steps, reads)
        memory = max(_read_rate(memory_reader, order) for _ in range(passes))
        store = max(_read_rate(SoftLabelReader(url), order) for _ in range(passes))
        with tempfile.TemporaryDirectory() as scratch:
            raw_mb_s, row_bytes = max(_raw_numpy_mb_s(memory_reader, order, Path(scratch)) for _ in range(passes))
        bytes_on_disk = sum(p.stat().st_size for p in Path(url).rglob("*") if p.is_file())
        layout = memory_reader.layout
        store_mb_s = store * row_bytes / layout.batch_size / 1e6  # the same logical bytes per step as raw
        rows.append({
            "store": "/".join(Path(url).parts[-3:-1]),
            "format": f"{layout.label_format}{layout.topk if layout.label_format == 'topk' else ''}+{layout.augmentation}",
            "steps": layout.steps,
            "bytes/step": round(bytes_on_disk / layout.steps),
            "raw bytes/step": row_bytes,
            "store MB/s": round(store_mb_s, 2),
            "raw .npy MB/s": round(raw_mb_s, 2),
            "store samples/s": round(store),
            "memory samples/s": round(memory),
            "store/memory": round(store / memory, 3),
        })
    return rows
