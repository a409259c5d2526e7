"""Stage `evaluate`: a fresh student trained only on a store's images and kept soft labels.

The reference protocol: ``evaluate.epochs`` epochs (default the stream's own E) of the
stream's steps per epoch: an unpruned store replayed as stored, every step once; a pruned one
drawing each epoch's steps uniformly with replacement from the kept pool
(:func:`tasks.labels.replay.training_schedule`), so every pruning factor gets the same compute. Each step (replayed by :class:`tasks.labels.ReplayedSteps`, the public replay path) applies
the stored crop / flip / CutMix to the stored images and minimises
``KL(softmax(t / T) || softmax(s / T))`` (batchmean; times T^2 in the small-image recipe).
The optimizer is a named recipe (:data:`tasks.stages.evaluate.config.RECIPES`: ``small_image`` SGD with warm-up, or
``imagenet`` AdamW), warm-up then cosine per step, no weight decay on biases and norm layers.
One student per seed, each saved as it finishes (a killed run resumes at the next seed); top-1
on the real test split reported as mean and std over seeds, beside the teacher's (an input, so
the test split is read here alone). ``evaluate.labels=hard`` trains the
baseline instead: cross-entropy on the images' class labels, the same steps of the same batch
size, fresh seeded crops and flips.

    distillery run --set evaluate.seeds=3 --set evaluate.recipe=imagenet
"""

from __future__ import annotations

import json
import statistics

import numpy as np
import torch

from storage.artifacts import ArtifactRef, ArtifactStore
from storage.file_names import IMAGES, LABELS, seed_file
from storage.image_store import read_image_store
from storage.label_codec import array_bytes
from storage.softlabels import SoftLabelReader
from tasks.data import load_split, normalization
from tasks.models import load_teacher
from tasks.progress import StageProgress
from tasks.runtime import RuntimeConfig, generator, resolve_device
from tasks.stages.evaluate.config import EvaluateRequest
from tasks.stages.evaluate.students import train_student, train_student_hard
from tasks.stages.stage_task import StageRun, stage_task, units_in_order
from tasks.training import top1_accuracy

HELD_OUT = ("val", "test")
# The teacher's top-1 per (artifact root, teacher, held-out data, device): a report's evaluates
# share one teacher, and scoring it on 16,000 images costs seconds each time.
_TEACHER_TOP1: dict[tuple, dict[str, float]] = {}


def training_images(request: EvaluateRequest, store: ArtifactStore) -> tuple[np.ndarray, np.ndarray, int]:
    """(N, C, H, W) uint8 images, (N,) class labels and the class count the students train on."""
    if request.evaluate.train_set == "full":
        train = load_split(request.data, "train")
        return train.images_at(torch.arange(len(train))).numpy(), train.labels.numpy(), train.num_classes
    images, classes, attrs = read_image_store(store.url(request.inputs["images"], IMAGES))
    return images, classes, int(attrs["num_classes"])


class EvaluateJob:
    """One evaluate request's students (one unit per seed) and the data they need, loaded once per process."""

    def __init__(self, request: EvaluateRequest, runtime: RuntimeConfig) -> None:
        self.request, self.runtime, config = request, runtime, request.evaluate
        self.store, self.ref, self.device = ArtifactStore(runtime.artifact_root), request.ref(), resolve_device(runtime)
        images_ref, labels_ref = request.inputs.get("images"), request.inputs.get("labels")
        wired = "teacher" in request.inputs and (labels_ref is None) == (config.labels == "hard")
        if not wired or (images_ref is None) != (config.train_set == "full"):
            raise ValueError(f"evaluate (labels={config.labels}, train_set={config.train_set}) got inputs "
                             f"{sorted(request.inputs)}; the distill flow wires these, check a hand-made request")
        images_u8, self.classes, self.num_classes = training_images(request, self.store)
        self.labels = (SoftLabelReader(self.store.url(labels_ref, LABELS), expect={"images": images_ref.fingerprint})
                       if labels_ref is not None else None)
        self.norm = normalization(request.data)
        self.images = self.norm.to_input(torch.from_numpy(images_u8).to(self.device))
        # The held-out splits the students are scored on: validation (where the data has one), then test.
        self.scored = {split: load_split(request.data, split) for split in HELD_OUT if split in request.data_identity}

    def __len__(self) -> int:
        return self.request.evaluate.seeds

    def pending(self) -> list[int]:
        return [index for index in range(self.request.evaluate.seeds) if not self.store.exists(self.ref, seed_file(index))]

    def intact(self, index: int) -> bool:
        """Whether saved student ``index``'s result file still parses (its figures are not checksummed)."""
        try:
            result = self.result(index)
        except ValueError:  # JSON and UTF-8 decoding errors both are
            return False
        return isinstance(result, dict) and "seed" in result

    def top1(self, model: torch.nn.Module) -> dict[str, float]:
        """``{"val_top1": ..., "test_top1": ...}`` of ``model`` on the held-out splits read."""
        return {f"{split}_top1": top1_accuracy(model, source, norm=self.norm, device=self.device,
                                              workers=self.runtime.workers) for split, source in self.scored.items()}

    def teacher_top1(self) -> dict[str, float]:
        """:meth:`top1` of the request's teacher, computed once per process for the same teacher and data."""
        teacher_ref = self.request.inputs["teacher"]
        key = (self.runtime.artifact_root, str(teacher_ref), tuple(sorted(self.request.data_identity.items())),
               str(self.device))
        if key not in _TEACHER_TOP1:
            _TEACHER_TOP1[key] = self.top1(load_teacher(self.store, teacher_ref, self.device))
        return _TEACHER_TOP1[key]

    def build(self, index: int) -> None:
        """Train and score student ``index``; save its seed and top-1 on each held-out split."""
        config, device, runtime = self.request.evaluate, self.device, self.runtime
        seed = int(torch.randint(0, 2**62, (1,), generator=generator(self.request.seed, "evaluate", index)))
        student = (
            train_student(self.images, self.labels, config, num_classes=self.num_classes, seed=seed, runtime=runtime)
            if self.labels is not None
            else train_student_hard(self.images, torch.from_numpy(self.classes).to(device), config,
                                    augment=self.request.data.augment_with(config.augment), num_classes=self.num_classes,
                                    seed=seed, runtime=runtime)
        )
        self.store.write_bytes(self.ref, seed_file(index), json.dumps({"seed": seed, **self.top1(student)}).encode())

    def result(self, index: int) -> dict:
        return json.loads(self.store.read_bytes(self.ref, seed_file(index)))


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


@stage_task("evaluate", tags=("distillery", "compute"))
def evaluate_task(run: StageRun, runtime: RuntimeConfig) -> ArtifactRef:
    request = run.request
    job = EvaluateJob(request, runtime)
    config, store, labels = request.evaluate, job.store, job.labels
    labels_ref, images_ref = request.inputs.get("labels"), request.inputs.get("images")
    progress = StageProgress("evaluate", config.seeds)
    for index in units_in_order(job, "evaluate"):
        progress(index + 1, f"seed {index}: " + ", ".join(f"{k} {v:.4f}" for k, v in job.result(index).items()
                                                          if k.endswith("top1")))
    per_seed = {f"{split}_top1": [job.result(i)[f"{split}_top1"] for i in range(config.seeds)] for split in job.scored}
    teacher = job.teacher_top1()
    per_epoch = labels.attrs["steps_per_epoch"] if labels is not None else -(-len(job.images) // config.batch_size)
    metrics = {**{name: statistics.fmean(values) for name, values in per_seed.items()},
               **{f"{name}_std": spread(values) for name, values in per_seed.items()},
               **{f"teacher_{name}": value for name, value in teacher.items()},
               "labels_store_bytes": float(sum(array_bytes(store.url(labels_ref, LABELS)).values())) if labels_ref else 0.0,
               "images_store_bytes": float(sum(array_bytes(store.url(images_ref, IMAGES)).values())) if images_ref else 0.0,
               "student_steps": float(config.total_steps(per_epoch)),
               "label_steps": float(labels.num_steps) if labels is not None else 0.0,
               "label_compression": labels.attrs["stream_steps"] / labels.num_steps if labels is not None else 0.0}
    return run.finish(metrics=metrics, extra={"device": job.device.type,
                                              **{f"{name}_per_seed": values for name, values in per_seed.items()},
                                              "prune_rule": labels.attrs.get("prune_rule") if labels is not None else None})
