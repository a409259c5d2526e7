"""Stage `relabel`: the request, the chunked job that writes the soft-label store, and the @task entry
(:mod:`tasks.stages.relabel` says what the stage does)."""

from __future__ import annotations


import numpy as np
import torch
from pydantic import Field
from torch import nn

from storage.artifacts import ArtifactRef, ArtifactStore, StageRequest
from storage.file_names import IMAGES, LABELS
from storage.image_store import read_image_store
from storage.label_codec import encode_labels, store_metrics
from storage.softlabels import SoftLabelWriter, StoreLayout
from tasks.data import DataConfig, normalization
from tasks.labels.stream import (
    StreamGeometry, apply_augmentation, kept_step_count, sample_augmentation, step_images, step_seed,
)
from tasks.models import load_teacher
from tasks.progress import StageProgress
from tasks.runtime import RuntimeConfig, resolve_device
from tasks.stages.relabel.config import RelabelConfig
from tasks.stages.stage_task import StageRun, stage_task, units_in_order


class RelabelRequest(StageRequest):
    stage = "relabel"
    code_version = 3  # 3: default chunks at most an eighth of a small store; 2: float32 labels, floor((1 - r) S)

    data: DataConfig
    relabel: RelabelConfig
    prefix_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Generate only this prefix of the stream.")


class RelabelError(RuntimeError):
    """Relabelling cannot start; the message names the setting to change."""


def relabel_request(
    *, data: DataConfig, relabel: RelabelConfig, prune_ratio: float, prune_rule: str, seed: int,
    teacher: ArtifactRef, images: ArtifactRef,
) -> RelabelRequest:
    prefix = prune_ratio if relabel.generate == "kept" and prune_rule == "prefix" else 0.0
    return RelabelRequest(data=data, relabel=relabel, prefix_ratio=prefix, seed=seed,
                          inputs={"teacher": teacher, "images": images})


def store_layout(config: RelabelConfig, *, steps: int, num_classes: int) -> StoreLayout:
    if config.label_format == "topk" and config.topk >= num_classes:
        raise RelabelError(f"relabel.topk={config.topk} must be below the {num_classes} classes; lower it or use fp16")
    return StoreLayout(steps=steps, batch_size=config.batch_size, num_classes=num_classes,
                       label_format=config.label_format, topk=config.topk, augmentation=config.augmentation,
                       cutmix=config.cutmix, steps_per_chunk=config.chunk_steps).resumable()


def label_steps(
    model: nn.Module, images: torch.Tensor, step_ids: range, *, config: RelabelConfig, layout: StoreLayout,
    geometry: StreamGeometry, seed: int, crop_scale_min: float,
) -> dict[str, np.ndarray]:
    """The stored arrays of ``step_ids``: images (N, C, H, W) normalised on the teacher's device.

    The teacher runs in float32 even where the rest of the pipeline uses mixed precision: the
    labels are the product, and only their storage format may round them.
    """
    device = images.device
    rows: dict[str, np.ndarray] = {
        name: np.zeros((len(step_ids), *tail), dtype) for name, (tail, dtype) in layout.arrays().items()
    }
    if "image_index" in rows:
        rows["image_index"][:] = -1
    for row, step_id in enumerate(step_ids):
        index = step_images(seed, step_id, geometry)
        n, aug_seed = len(index), step_seed(seed, step_id)
        aug = sample_augmentation(aug_seed, n=n, image_size=images.shape[-1],
                                  crop_scale_min=crop_scale_min, cutmix=config.cutmix)
        with torch.no_grad():
            logits = model(apply_augmentation(images[index.to(device)], aug)).float().cpu().numpy()
        rows["step_id"][row] = step_id
        encoded = encode_labels(logits, config.label_format, topk=config.topk, temperature=config.label_temperature)
        for name, value in encoded.items():
            if value.ndim == 0:  # one value per step (logit8's span)
                rows[name][row] = value
            else:
                rows[name][row, :n] = value
        if config.augmentation == "stream":
            continue
        rows["image_index"][row, :n] = index.numpy()
        if config.augmentation == "seed":
            rows["aug_seed"][row] = aug_seed
            continue
        rows["crop"][row, :n], rows["flip"][row, :n] = aug.boxes.numpy(), aug.flips.numpy()
        if config.cutmix:
            rows["mix_perm"][row, :n], rows["mix_lambda"][row] = aug.mix_perm.numpy(), aug.mix_lambda
            rows["mix_box"][row] = aug.mix_box
    return rows


class RelabelJob:
    """One relabel request's chunks and what labelling them needs, loaded once per process.

    Opening the job creates the store (or reopens a half-written one), so a scaled-out run opens
    it once in the flow before mapping :meth:`build` over chunks: writers of different chunks
    never touch the same file.
    """

    def __init__(self, request: RelabelRequest, runtime: RuntimeConfig) -> None:
        self.request, self.runtime, config = request, runtime, request.relabel
        self.store, self.ref, self.device = ArtifactStore(runtime.artifact_root), request.ref(), resolve_device(runtime)
        teacher_ref, images_ref = request.inputs["teacher"], request.inputs["images"]
        self.model = load_teacher(self.store, teacher_ref, self.device)
        images_u8, _, image_attrs = read_image_store(self.store.url(images_ref, IMAGES))
        self.geometry = StreamGeometry(len(images_u8), config.batch_size, config.epochs)
        self.crop_scale_min = request.data.crop_scale_min_with(config.crop_scale_min)
        steps = kept_step_count(request.prefix_ratio, self.geometry.total_steps)
        self.layout = store_layout(config, steps=steps, num_classes=int(image_attrs["num_classes"]))
        self.url = self.store.url(self.ref, LABELS)
        self.writer = SoftLabelWriter.open(self.url, self.layout, {
            "teacher": teacher_ref.fingerprint, "images": images_ref.fingerprint, "seed": request.seed,
            "epochs": config.epochs, "num_images": self.geometry.num_images,
            "steps_per_epoch": self.geometry.steps_per_epoch, "stream_steps": self.geometry.total_steps,
            "mix": "cutmix" if config.cutmix else "none", "crop_scale_min": self.crop_scale_min,
            "label_temperature": config.label_temperature, "image_size": int(images_u8.shape[-1]), "pruned_from": None,
        })
        self.images = normalization(request.data).to_input(torch.from_numpy(images_u8).to(self.device))

    def __len__(self) -> int:
        return self.layout.num_chunks

    def pending(self) -> list[int]:
        return self.writer.pending_chunks()

    def intact(self, chunk: int) -> bool:
        return self.writer.reads_back(chunk)

    def build(self, chunk: int) -> None:
        start, stop = self.layout.chunk_bounds(chunk)
        self.writer.write_chunk(chunk, label_steps(
            self.model, self.images, range(start, stop), config=self.request.relabel, layout=self.layout,
            geometry=self.geometry, seed=self.request.seed, crop_scale_min=self.crop_scale_min,
        ))


@stage_task("relabel", tags=("distillery", "compute"))
def relabel_task(run: StageRun, runtime: RuntimeConfig) -> ArtifactRef:
    request = run.request
    job = RelabelJob(request, runtime)
    layout = job.layout
    progress = StageProgress("relabel", layout.num_chunks)
    progress.info("relabel: %d steps in %d chunks", layout.steps, layout.num_chunks)
    for chunk in units_in_order(job, "relabel"):
        start, stop = layout.chunk_bounds(chunk)
        progress(chunk + 1, f"chunk {chunk} steps {start}-{stop - 1}")
    geometry = job.geometry
    metrics, sizes = store_metrics(job.url, steps=layout.steps, stored_samples=layout.steps * request.relabel.batch_size,
                                   num_images=geometry.num_images, epochs=geometry.epochs, num_classes=layout.num_classes)
    return run.finish(metrics=metrics, extra={"device": job.device.type, "labels": LABELS, "array_bytes": sizes,
                                              "stream_steps": job.geometry.total_steps})
