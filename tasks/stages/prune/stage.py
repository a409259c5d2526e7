"""Stage `prune`: choosing the kept steps, writing the pruned store, and the @task entry
(:mod:`tasks.stages.prune` says what the stage does)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from storage.artifacts import ArtifactRef, StageRequest
from storage.file_names import LABELS
from storage.label_codec import store_metrics
from storage.softlabels import SoftLabelReader, SoftLabelWriter, StoreLayout
from tasks.labels.stream import StreamGeometry, kept_step_count
from tasks.progress import StageProgress
from tasks.runtime import RuntimeConfig, generator
from tasks.stages.prune.config import PruneConfig
from tasks.stages.stage_task import StageRun, stage_task


class PruneRequest(StageRequest):
    stage = "prune"
    code_version = 2  # 2: floor((1 - r) S) steps kept, not ceil

    prune: PruneConfig


class PruneError(RuntimeError):
    """The source store cannot be pruned this way; the message names the setting to change."""


def kept_steps(config: PruneConfig, *, geometry: StreamGeometry, available: np.ndarray, seed: int) -> np.ndarray:
    """Sorted stream step ids to keep, checked against the ``available`` ones of the source store."""
    total = geometry.total_steps
    if config.rule == "prefix":
        kept = np.arange(kept_step_count(config.ratio, total))
    elif config.rule == "uniform":
        order = torch.randperm(total, generator=generator(seed, "prune", "uniform"))
        kept = np.sort(order[: kept_step_count(config.ratio, total)].numpy())
    else:
        epochs = torch.randperm(geometry.epochs, generator=generator(seed, "prune", "epoch"))
        chosen = np.sort(epochs[: kept_step_count(config.ratio, geometry.epochs)].numpy())
        per = geometry.steps_per_epoch
        kept = (chosen[:, None] * per + np.arange(per)[None, :]).reshape(-1)
    missing = np.setdiff1d(kept, available)
    if len(missing):
        raise PruneError(
            f"prune.rule={config.rule} at ratio {config.ratio} keeps step {int(missing[0])}, which the relabel "
            f"store does not hold ({len(available)} of {total} steps generated); set relabel.generate=all"
        )
    return kept.astype(np.int64)


def pruned_layout(source: SoftLabelReader, steps: int) -> StoreLayout:
    """The source's layout with fewer steps, re-chunked for its new size."""
    return StoreLayout(**{**vars(source.layout), "steps": steps, "steps_per_chunk": None})


def write_pruned(
    source: SoftLabelReader, url: str, rows: np.ndarray, attributes: dict[str, Any], *,
    layout: StoreLayout, on_chunk: Callable[[int, str], None] | None = None,
) -> None:
    """Copy the source's ``rows`` (store row indices) into a new store at ``url``, chunk by chunk."""
    base = {k: v for k, v in source.attrs.items() if k not in {"format_version", *layout.to_attrs()}}
    writer = SoftLabelWriter.open(url, layout, {**base, **attributes})
    for chunk in writer.pending_chunks():
        start, stop = layout.chunk_bounds(chunk)
        picked = [source.rows(int(r)) for r in rows[start:stop]]
        arrays = {name: np.stack([row[name] for row in picked]) for name in layout.arrays()}
        writer.write_chunk(chunk, arrays)
        if on_chunk is not None:
            on_chunk(chunk + 1, f"chunk {chunk} steps {start}-{stop - 1}")


@stage_task("prune", tags=("distillery", "io"))
def prune_task(run: StageRun, runtime: RuntimeConfig) -> ArtifactRef:
    store, ref, request = run.store, run.ref, run.request
    source_ref = request.inputs["labels"]
    source = SoftLabelReader(store.url(source_ref, LABELS))
    attrs = source.attrs
    geometry = StreamGeometry(attrs["num_images"], attrs["batch_size"], attrs["epochs"])
    available = source.step_ids()
    kept = kept_steps(request.prune, geometry=geometry, available=available, seed=request.seed)
    rows = np.searchsorted(available, kept)
    layout = pruned_layout(source, len(kept))
    write_pruned(
        source, store.url(ref, LABELS), rows,
        {"pruned_from": source_ref.fingerprint, "prune_ratio": request.prune.ratio, "prune_rule": request.prune.rule},
        layout=layout, on_chunk=StageProgress("prune", layout.num_chunks),
    )
    metrics, sizes = store_metrics(store.url(ref, LABELS), steps=layout.steps, stored_samples=len(kept) * layout.batch_size,
                                   num_images=geometry.num_images, epochs=geometry.epochs, num_classes=layout.num_classes)
    metrics["kept_fraction"] = len(kept) / geometry.total_steps
    metrics["compression"] = geometry.total_steps / len(kept)
    return run.finish(metrics=metrics, extra={"labels": LABELS, "array_bytes": sizes, "stream_steps": geometry.total_steps})
