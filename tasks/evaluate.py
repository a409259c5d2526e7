"""Stage `evaluate`: a fresh student trained only on a store's images and kept soft labels.

Each of ``evaluate.epochs`` epochs draws its steps uniformly with replacement from the kept
pool (:func:`tasks.prune.training_schedule`); each step replays the stored crop / flip / CutMix
on the stored images and minimises ``KL(softmax(t / T) || softmax(s / T))`` (batchmean; times
T^2 if asked). AdamW with no weight decay on biases and BatchNorm, cosine LR per step. One
student per seed, each saved as it finishes (a killed run resumes at the next seed); top-1 on
the real test split reported as mean and std over seeds. ``evaluate.labels=hard`` trains the
baseline instead: cross-entropy on the images' class labels, fresh seeded crops and flips.

    distillery run --set evaluate.seeds=3 --set evaluate.epochs=300
"""

from __future__ import annotations

import json
import math
import statistics
import time
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from storage.artifacts import ArtifactRef, ArtifactStore, StageRequest
from storage.image_store import read_image_store
from storage.softlabels import SoftLabelReader, array_bytes
from storage.stage_cache import stage_task
from tasks.augment import AugmentConfig, augment_batch
from tasks.data import DataConfig, load_split, normalization
from tasks.label_stream import apply_augmentation, stored_augmentation
from tasks.models import create_model
from tasks.pixels import Normalization
from tasks.progress import StageProgress
from tasks.prune import training_schedule
from tasks.relabel import LABELS
from tasks.runtime import RuntimeConfig, autocast, generator, resolve_device
from tasks.synthesize import IMAGES
from tasks.teacher import top1_accuracy


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str = Field("convnet", description="Student architecture (see tasks.models).")
    width: int = Field(32, ge=4, le=1024, description="convnet channels per layer.")
    depth: int = Field(3, ge=1, le=8, description="convnet conv blocks.")
    seeds: int = Field(3, ge=1, le=100, description="Students trained; top-1 reported as mean ± std.")
    epochs: int = Field(300, ge=1, le=100000)
    lr: float = Field(1e-3, gt=0, le=10, description="AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay (none on bias/BN).")
    temperature: float = Field(20.0, gt=0, description="KL distillation temperature T.")
    t_squared: bool = Field(False, description="Multiply the KL loss by T^2.")
    labels: Literal["soft", "hard"] = Field(
        "soft", description="soft: the stored teacher logits (KL); hard: the images' class labels (cross-entropy, "
        "fresh seeded crops and flips; the baseline, no relabel needed)."
    )
    batch_size: int = Field(100, ge=1, le=65536, description="Batch size of hard-label training.")
    steps: int | None = Field(
        None, ge=1, le=10_000_000, description="Optimizer steps per student, whatever the set's size (epochs is then "
        "ignored): the same compute for IPC 10 and IPC 50. None: epochs x steps per epoch."
    )
    train_set: Literal["distilled", "full"] = Field(
        "distilled", description="distilled: the synthesized images; full: the whole real training split with hard "
        "labels (the upper reference of DD-Ranking's hard-label recovery; needs labels=hard)."
    )

    @model_validator(mode="after")
    def _full_needs_hard_labels(self) -> EvaluateConfig:
        if self.train_set == "full" and self.labels != "hard":
            raise ValueError("train_set=full trains on real class labels; set evaluate.labels=hard")
        return self

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.steps if self.steps is not None else self.epochs * steps_per_epoch


class EvaluateRequest(StageRequest):
    stage = "evaluate"
    code_version = 2  # 2: student_steps metric, evaluate.steps / train_set

    data: DataConfig
    evaluate: EvaluateConfig


def soft_label_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, config: EvaluateConfig) -> torch.Tensor:
    t = config.temperature
    loss = F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True)
    return loss * t * t if config.t_squared else loss


def adamw(model: nn.Module, config: EvaluateConfig) -> torch.optim.AdamW:
    """Weight decay on weight matrices and kernels only: none on biases and BatchNorm."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=config.lr)


def train_student(
    images: torch.Tensor, labels: SoftLabelReader, config: EvaluateConfig, *, num_classes: int, seed: int,
    runtime: RuntimeConfig,
) -> nn.Module:
    """Train one student on ``images`` (N, C, H, W), normalised on the device, and the store's steps."""
    device, size = images.device, images.shape[-1]
    torch.manual_seed(seed)  # the student's initial weights
    student = create_model(config.model, channels=images.shape[1], num_classes=num_classes, image_size=size,
                           width=config.width, depth=config.depth).to(device)
    optimizer = adamw(student, config)
    attrs = labels.attrs
    per_epoch = attrs["steps_per_epoch"]
    total = config.total_steps(per_epoch)
    schedule = training_schedule(labels.num_steps, steps_per_epoch=per_epoch, epochs=-(-total // per_epoch),
                                 seed=seed).reshape(-1)[:total]
    student.train()
    for index, row in enumerate(schedule):
        for group in optimizer.param_groups:
            group["lr"] = 0.5 * config.lr * (1 + math.cos(math.pi * index / len(schedule)))
        step = labels.step(int(row))
        aug = stored_augmentation(step, image_size=size, crop_scale_min=attrs["crop_scale_min"],
                                  cutmix=attrs["mix"] == "cutmix")
        batch = apply_augmentation(images[torch.from_numpy(step.image_index).long().to(device)], aug)
        with autocast(device, runtime):
            logits = student(batch).float()
        loss = soft_label_loss(logits, torch.from_numpy(step.logits).to(device), config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return student.eval()


def train_student_hard(
    images: torch.Tensor, targets: torch.Tensor, config: EvaluateConfig, *, num_classes: int, seed: int,
    runtime: RuntimeConfig,
) -> nn.Module:
    """The hard-label baseline: cross-entropy on the class labels, per-sample seeded crops and flips."""
    device, size = images.device, images.shape[-1]
    torch.manual_seed(seed)
    student = create_model(config.model, channels=images.shape[1], num_classes=num_classes, image_size=size,
                           width=config.width, depth=config.depth).to(device)
    optimizer = adamw(student, config)
    gen = generator(seed, "evaluate", "hard")
    total = config.total_steps(-(-len(images) // config.batch_size))
    student.train()
    done = 0
    while done < total:
        for index in torch.randperm(len(images), generator=gen).split(config.batch_size):
            if done == total:
                break
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * config.lr * (1 + math.cos(math.pi * done / total))
            done += 1
            batch = augment_batch(images[index.to(device)], AugmentConfig(crop_scale_min=0.5), gen)
            with autocast(device, runtime):
                logits = student(batch).float()
            loss = F.cross_entropy(logits, targets[index.to(device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return student.eval()


def training_images(request: EvaluateRequest, store: ArtifactStore) -> tuple[np.ndarray, np.ndarray, int]:
    """(N, C, H, W) uint8 images, (N,) class labels and the class count the students train on."""
    if request.evaluate.train_set == "full":
        train = load_split(request.data, "train")
        return train.images_at(torch.arange(len(train))).numpy(), train.labels.numpy(), train.num_classes
    images, classes, attrs = read_image_store(store.url(request.inputs["images"], IMAGES))
    return images, classes, int(attrs["num_classes"])


def _seed_file(index: int) -> str:
    return f"seeds/seed-{index:03d}.json"


class EvaluateJob:
    """One evaluate request's students (one unit per seed) and the data they need, loaded once per process."""

    def __init__(self, request: EvaluateRequest, runtime: RuntimeConfig) -> None:
        self.request, self.runtime, config = request, runtime, request.evaluate
        self.store, self.ref, self.device = ArtifactStore(runtime.artifact_root), request.ref(), resolve_device(runtime)
        images_ref, labels_ref = request.inputs.get("images"), request.inputs.get("labels")
        if (labels_ref is None) != (config.labels == "hard") or (images_ref is None) != (config.train_set == "full"):
            raise ValueError(f"evaluate (labels={config.labels}, train_set={config.train_set}) got inputs "
                             f"{sorted(request.inputs)}; the distill flow wires these, check a hand-made request")
        images_u8, self.classes, self.num_classes = training_images(request, self.store)
        self.labels = (SoftLabelReader(self.store.url(labels_ref, LABELS), expect={"images": images_ref.fingerprint})
                       if labels_ref is not None else None)
        self.norm = Normalization(*normalization(request.data))
        self.images = self.norm.to_input(torch.from_numpy(images_u8).to(self.device))
        self.test = load_split(request.data, "test")

    def pending(self) -> list[int]:
        return [index for index in range(self.request.evaluate.seeds) if not self.store.exists(self.ref, _seed_file(index))]

    def build(self, index: int) -> None:
        """Train and test student ``index``; save its seed and top-1."""
        config, device, runtime = self.request.evaluate, self.device, self.runtime
        seed = int(torch.randint(0, 2**62, (1,), generator=generator(self.request.seed, "evaluate", index)))
        student = (
            train_student(self.images, self.labels, config, num_classes=self.num_classes, seed=seed, runtime=runtime)
            if self.labels is not None
            else train_student_hard(self.images, torch.from_numpy(self.classes).to(device), config,
                                    num_classes=self.num_classes, seed=seed, runtime=runtime)
        )
        top1 = top1_accuracy(student, self.test, norm=self.norm, device=device)
        self.store.write_bytes(self.ref, _seed_file(index), json.dumps({"seed": seed, "test_top1": top1}).encode())

    def result(self, index: int) -> dict:
        return json.loads(self.store.read_bytes(self.ref, _seed_file(index)))


@stage_task("evaluate", tags=("distillery", "compute"))
def evaluate_task(request: EvaluateRequest, runtime: RuntimeConfig) -> ArtifactRef:
    started = time.perf_counter()
    job = EvaluateJob(request, runtime)
    config, store, ref, labels = request.evaluate, job.store, job.ref, job.labels
    labels_ref, images_ref = request.inputs.get("labels"), request.inputs.get("images")
    pending = set(job.pending())
    progress = StageProgress("evaluate", config.seeds)
    for index in range(config.seeds):
        if index in pending:
            job.build(index)
        progress(index + 1, f"seed {index}: test top-1 {job.result(index)['test_top1']:.4f}")
    top1s = [job.result(i)["test_top1"] for i in range(config.seeds)]
    per_epoch = labels.attrs["steps_per_epoch"] if labels is not None else -(-len(job.images) // config.batch_size)
    metrics = {"test_top1": statistics.fmean(top1s),
               "test_top1_std": statistics.stdev(top1s) if len(top1s) > 1 else 0.0,
               "labels_store_bytes": float(sum(array_bytes(store.url(labels_ref, LABELS)).values())) if labels_ref else 0.0,
               "images_store_bytes": float(sum(array_bytes(store.url(images_ref, IMAGES)).values())) if images_ref else 0.0,
               "student_steps": float(config.total_steps(per_epoch))}
    store.write_manifest(ref, request, metrics=metrics, seconds=time.perf_counter() - started,
                         extra={"device": job.device.type, "test_top1_per_seed": top1s,
                                "label_steps": labels.num_steps if labels is not None else 0})
    return ref
