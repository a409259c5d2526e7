"""Stage `evaluate`: a fresh student trained only on a store's images and kept soft labels.

The reference protocol: ``evaluate.epochs`` epochs (default the stream's own E) of the
stream's steps per epoch, each epoch drawing its steps uniformly with replacement from the kept
pool (:func:`tasks.prune.training_schedule`), so every pruning factor gets the same compute.
Each step (replayed by :class:`tasks.student_data.ReplayedSteps`, the public replay path) applies
the stored crop / flip / CutMix to the stored images and minimises
``KL(softmax(t / T) || softmax(s / T))`` (batchmean; times T^2 in the small-image recipe).
The optimizer is a named recipe (:data:`RECIPES`: ``small_image`` SGD with warm-up, or
``imagenet`` AdamW), warm-up then cosine per step, no weight decay on biases and norm layers.
One student per seed, each saved as it finishes (a killed run resumes at the next seed); top-1
on the real test split reported as mean and std over seeds. ``evaluate.labels=hard`` trains the
baseline instead: cross-entropy on the images' class labels, the same steps of the same batch
size, fresh seeded crops and flips.

    distillery run --set evaluate.seeds=3 --set evaluate.recipe=imagenet
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from storage.artifacts import ArtifactRef, ArtifactStore, StageRequest
from storage.image_store import read_image_store
from storage.softlabels import SoftLabelReader, array_bytes
from storage.stage_cache import StageRun, stage_task
from tasks.augment import AugmentConfig, augment_batch
from tasks.data import DataConfig, load_split, normalization
from tasks.models import create_model
from tasks.progress import StageProgress
from tasks.relabel import LABELS
from tasks.runtime import RuntimeConfig, autocast, generator, resolve_device
from tasks.schedule import param_groups, warmup_cosine
from tasks.student_data import ReplayedSteps
from tasks.synthesize import IMAGES
from tasks.teacher import top1_accuracy


@dataclass(frozen=True)
class Recipe:
    """A student training recipe: optimizer and its settings, warm-up, and the KL's T^2 factor."""

    optimizer: Literal["adamw", "sgd"]
    lr: float
    weight_decay: float
    momentum: float
    warmup_epochs: float
    t_squared: bool


RECIPES = {
    # The reference's ImageNet students: AdamW, cosine, no warm-up, plain KL.
    "imagenet": Recipe(optimizer="adamw", lr=1e-3, weight_decay=0.01, momentum=0.0, warmup_epochs=0, t_squared=False),
    # The reference's small-image (Tiny-ImageNet) students: SGD, 5 warm-up epochs then cosine, KL x T^2.
    "small_image": Recipe(optimizer="sgd", lr=0.2, weight_decay=1e-4, momentum=0.9, warmup_epochs=5, t_squared=True),
}


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str = Field("convnet", description="Student architecture (see tasks.models).")
    width: int = Field(32, ge=4, le=1024, description="convnet channels per layer.")
    depth: int = Field(3, ge=1, le=8, description="convnet conv blocks.")
    seeds: int = Field(3, ge=1, le=100, description="Students trained; top-1 reported as mean ± std.")
    recipe: Literal["small_image", "imagenet"] = Field(
        "small_image", description="small_image: SGD lr 0.2, momentum 0.9, wd 1e-4, 5 warm-up epochs, KL x T^2; "
        "imagenet: AdamW lr 1e-3, wd 0.01, no warm-up, plain KL. The fields below override single settings."
    )
    epochs: int | None = Field(
        None, ge=1, le=100000, description="Epochs of the label stream's steps per epoch; None: the stream's own "
        "E (relabel.epochs), so every stored step is used once at 1x and every ratio gets the same compute."
    )
    lr: float | None = Field(None, gt=0, le=10, description="Peak learning rate; None: the recipe's.")
    weight_decay: float | None = Field(None, ge=0, le=1, description="Weight decay (none on bias/norm); None: the recipe's.")
    warmup_epochs: float | None = Field(None, ge=0, description="Linear warm-up epochs before cosine; None: the recipe's.")
    t_squared: bool | None = Field(None, description="Multiply the KL loss by T^2; None: the recipe's.")
    temperature: float = Field(20.0, gt=0, description="KL distillation temperature T.")
    labels: Literal["soft", "hard"] = Field(
        "soft", description="soft: the stored teacher logits (KL); hard: the images' class labels (cross-entropy, "
        "fresh seeded crops and flips; the baseline, no relabel needed)."
    )
    batch_size: int | None = Field(
        None, ge=1, le=65536, description="Batch size of hard-label training; None: relabel.batch_size, so the "
        "baseline takes as many steps of the same size as the soft-label students."
    )
    augment: AugmentConfig | None = Field(
        None, description="Crops and flips of hard-label training; None: data.augment. (Soft-label students "
        "replay the stored augmentation.)"
    )
    steps: int | None = Field(
        None, ge=1, le=10_000_000, description="For experiments only: optimizer steps per student whatever the "
        "set's size (epochs is then ignored). None: epochs x steps per epoch."
    )
    train_set: Literal["distilled", "full"] = Field(
        "distilled", description="distilled: the synthesized images; full: the whole real training split with hard "
        "labels (the upper reference of DD-Ranking's hard-label recovery; needs labels=hard)."
    )
    also_unpruned: bool = Field(
        False, description="With prune.ratio > 0, also train students on the unpruned labels, so the run shows "
        "what pruning cost side by side (needs relabel.generate=all)."
    )

    @model_validator(mode="after")
    def _full_needs_hard_labels(self) -> EvaluateConfig:
        if self.train_set == "full" and self.labels != "hard":
            raise ValueError("train_set=full trains on real class labels; set evaluate.labels=hard")
        return self

    def for_stream(self, *, epochs: int, batch_size: int) -> EvaluateConfig:
        """This config with the stream's E and B filled in where left to them (None)."""
        return self.model_copy(update={"epochs": self.epochs or epochs, "batch_size": self.batch_size or batch_size})

    def settings(self) -> Recipe:
        """The recipe with this config's overrides applied."""
        base = RECIPES[self.recipe]
        overrides = {name: getattr(self, name) for name in ("lr", "weight_decay", "warmup_epochs", "t_squared")}
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def total_steps(self, steps_per_epoch: int) -> int:
        if self.steps is not None:
            return self.steps
        if self.epochs is None:
            raise ValueError("evaluate.epochs is unresolved; build the request with EvaluateConfig.for_stream")
        return self.epochs * steps_per_epoch


class EvaluateRequest(StageRequest):
    stage = "evaluate"
    code_version = 3  # 3: recipes, E epochs of the stream by default, label_steps / label_compression

    data: DataConfig
    evaluate: EvaluateConfig

    @model_validator(mode="after")
    def _stream_resolved(self) -> EvaluateRequest:
        if self.evaluate.batch_size is None or (self.evaluate.epochs is None and self.evaluate.steps is None):
            raise ValueError("evaluate.epochs / batch_size are unresolved; build the request with "
                             "EvaluateConfig.for_stream(epochs=relabel.epochs, batch_size=relabel.batch_size)")
        return self


def soft_label_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, config: EvaluateConfig) -> torch.Tensor:
    t = config.temperature
    loss = F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True)
    return loss * t * t if config.settings().t_squared else loss


def create_optimizer(model: nn.Module, config: EvaluateConfig) -> torch.optim.Optimizer:
    """The recipe's optimizer; no weight decay on biases and norm layers."""
    recipe = config.settings()
    groups = param_groups(model, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)


class StudentSchedule:
    """The learning rate of each of a student's ``total`` steps: warm-up epochs, then cosine."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: EvaluateConfig, *, total: int, steps_per_epoch: int):
        recipe = config.settings()
        self.optimizer, self.lr, self.total = optimizer, recipe.lr, total
        self.warmup = min(round(recipe.warmup_epochs * steps_per_epoch), total // 2)

    def set(self, step: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * warmup_cosine(step, warmup_steps=self.warmup, total_steps=self.total)


def train_student(
    images: torch.Tensor, labels: SoftLabelReader, config: EvaluateConfig, *, num_classes: int, seed: int,
    runtime: RuntimeConfig,
) -> nn.Module:
    """Train one student on ``images`` (N, C, H, W), normalised on the device, and the store's steps."""
    device, size = images.device, images.shape[-1]
    torch.manual_seed(seed)  # the student's initial weights
    student = create_model(config.model, channels=images.shape[1], num_classes=num_classes, image_size=size,
                           width=config.width, depth=config.depth).to(device)
    optimizer = create_optimizer(student, config)
    steps = ReplayedSteps(images, labels, seed=seed, steps=config.total_steps(labels.attrs["steps_per_epoch"]))
    lr = StudentSchedule(optimizer, config, total=len(steps), steps_per_epoch=steps.steps_per_epoch)
    student.train()
    for step in steps:
        lr.set(step.index)
        with autocast(device, runtime):
            logits = student(step.images).float()
        loss = soft_label_loss(logits, step.teacher_logits, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return student.eval()


def train_student_hard(
    images: torch.Tensor, targets: torch.Tensor, config: EvaluateConfig, *, augment: AugmentConfig, num_classes: int,
    seed: int, runtime: RuntimeConfig,
) -> nn.Module:
    """The hard-label baseline: cross-entropy on the class labels, per-sample seeded crops and flips."""
    device, size = images.device, images.shape[-1]
    torch.manual_seed(seed)
    student = create_model(config.model, channels=images.shape[1], num_classes=num_classes, image_size=size,
                           width=config.width, depth=config.depth).to(device)
    optimizer = create_optimizer(student, config)
    gen = generator(seed, "evaluate", "hard")
    per_epoch = -(-len(images) // config.batch_size)
    total = config.total_steps(per_epoch)
    lr = StudentSchedule(optimizer, config, total=total, steps_per_epoch=per_epoch)
    student.train()
    done = 0
    while done < total:
        for index in torch.randperm(len(images), generator=gen).split(config.batch_size):
            if done == total:
                break
            lr.set(done)
            done += 1
            batch = augment_batch(images[index.to(device)], augment, gen)
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
        self.norm = normalization(request.data)
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
                                    augment=config.augment or self.request.data.augment, num_classes=self.num_classes, seed=seed,
                                    runtime=runtime)
        )
        top1 = top1_accuracy(student, self.test, norm=self.norm, device=device, workers=self.runtime.workers)
        self.store.write_bytes(self.ref, _seed_file(index), json.dumps({"seed": seed, "test_top1": top1}).encode())

    def result(self, index: int) -> dict:
        return json.loads(self.store.read_bytes(self.ref, _seed_file(index)))


@stage_task("evaluate", tags=("distillery", "compute"))
def evaluate_task(run: StageRun, runtime: RuntimeConfig) -> ArtifactRef:
    request = run.request
    job = EvaluateJob(request, runtime)
    config, store, labels = request.evaluate, job.store, job.labels
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
               "student_steps": float(config.total_steps(per_epoch)),
               "label_steps": float(labels.num_steps) if labels is not None else 0.0,
               "label_compression": labels.attrs["stream_steps"] / labels.num_steps if labels is not None else 0.0}
    return run.finish(metrics=metrics, extra={"device": job.device.type, "test_top1_per_seed": top1s,
                                              "prune_rule": labels.attrs.get("prune_rule") if labels is not None else None})
