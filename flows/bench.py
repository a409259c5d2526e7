"""Benchmarks that print figures (never timed unit tests).

``label_store_reads``: for every soft-label store under an artifact root, the rate of reading
steps in random order, drawn uniformly with replacement as the student's training schedule
draws them, through a freshly opened :class:`SoftLabelReader` (chunk decoding included),
against the same decode path over arrays already in memory as numpy. Best of ``passes``
rounds of ``reads`` steps each.

    distillery bench-labels --artifact-root artifacts [--passes 3] [--reads 20000]
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from storage.softlabels import SoftLabelReader


class InMemoryReader(SoftLabelReader):
    """The same decode path, every array already in memory (the baseline)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._full = {name: array[:] for name, array in self.arrays.items()}

    def rows(self, step: int) -> dict[str, np.ndarray]:
        return {name: array[step] for name, array in self._full.items()}


def _read_rate(reader: SoftLabelReader, order: np.ndarray) -> float:
    started = time.perf_counter()
    samples = 0
    for step in order:
        samples += len(reader.step(int(step)).image_index)
    return samples / (time.perf_counter() - started)


def label_store_reads(root: str, *, passes: int = 3, reads: int = 20000, seed: int = 0) -> list[dict[str, object]]:
    """One row per store: format, size, and random-order read rates (samples/s), store vs memory."""
    rows = []
    for url in sorted(str(p) for p in Path(root).glob("*/*/labels.zarr")):
        baseline = InMemoryReader(url)
        order = np.random.default_rng(seed).integers(0, baseline.num_steps, reads)
        memory = max(_read_rate(baseline, order) for _ in range(passes))
        store = max(_read_rate(SoftLabelReader(url), order) for _ in range(passes))
        bytes_on_disk = sum(p.stat().st_size for p in Path(url).rglob("*") if p.is_file())
        layout = baseline.layout
        rows.append({
            "store": "/".join(Path(url).parts[-3:-1]),
            "format": f"{layout.label_format}{layout.topk if layout.label_format == 'topk' else ''}+{layout.augmentation}",
            "steps": layout.steps,
            "bytes/sample": round(bytes_on_disk / (layout.steps * layout.batch_size), 2),
            "memory samples/s": round(memory),
            "store samples/s": round(store),
            "store/memory": round(store / memory, 3),
        })
    return rows


def print_table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "no soft-label stores found"
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)
