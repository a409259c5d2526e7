"""Stage `teacher`: training the teacher (or loading given weights) and its @task entry
(:mod:`tasks.stages.teacher` says what the stage does)."""

from __future__ import annotations

import hashlib
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from storage.artifacts import ArtifactRef, StageRequest
from storage.file_names import MODEL
from storage.tensor_files import write_tensors
from tasks.augment import AugmentConfig, augment_batch
from tasks.data import DataConfig, ImageSource, load_split, normalization
from tasks.data.batches import image_batches
from tasks.data.identity import SplitIdentity
from tasks.models import build_teacher
from tasks.normalization import Normalization
from tasks.pretrained import load_weights, read_state_dict, weights_file
from tasks.progress import StageProgress
from tasks.runtime import RuntimeConfig, autocast, generator, resolve_device
from tasks.stages.teacher.config import TeacherConfig
from tasks.stages.stage_task import StageRun, stage_task
from tasks.training import LearningRate, param_groups, run_steps, top1_accuracy


class TeacherRequest(StageRequest):
    stage = "teacher"
    code_version = 2  # 2: named by the train split's identity; the test split is evaluate's to read

    data: DataConfig
    data_identity: dict[str, SplitIdentity]  # the splits read: train, and val to score the teacher
    teacher: TeacherConfig
    weights_sha256: str | None = None


def teacher_request(*, data: DataConfig, teacher: TeacherConfig, seed: int,
                    data_identity: dict[str, SplitIdentity]) -> TeacherRequest:
    """The request for this config; given weights are checked to be a state dict and enter the
    fingerprint by content. WeightsError names a file that is missing or not a state dict."""
    digest = None
    if teacher.weights is not None:
        path = weights_file(teacher.weights)
        read_state_dict(path, origin=teacher.weights)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return TeacherRequest(data=data, teacher=teacher, seed=seed, weights_sha256=digest, data_identity=data_identity)


def train_teacher(
    model: nn.Module,
    train: ImageSource,
    config: TeacherConfig,
    *,
    augment: AugmentConfig,
    norm: Normalization,
    seed: int,
    device: torch.device,
    runtime: RuntimeConfig,
    on_epoch: Callable[[int, str], None] | None = None,
) -> list[float]:
    """Train in place; returns the mean training loss of each epoch."""
    optimizer = torch.optim.SGD(param_groups(model, weight_decay=config.weight_decay), lr=config.lr,
                                momentum=config.momentum)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    lr = LearningRate(config.lr, total_steps=config.epochs * steps_per_epoch,
                      warmup_steps=round(config.warmup_epochs * steps_per_epoch))
    epoch_losses = []
    for epoch in range(config.epochs):
        model.train()
        gen = generator(seed, "teacher", "epoch", epoch)
        order = torch.randperm(len(train), generator=gen)
        indices = order.split(config.batch_size)
        batches = image_batches(train, indices, workers=runtime.workers, device=device)

        def loss_of(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            index, images_u8 = batch  # (B,), (B, C, H, W) uint8
            images = augment_batch(images_u8.float() / 255, augment, gen)
            with autocast(device, runtime):
                return F.cross_entropy(model(norm.to_input(images)), train.labels[index].to(device))

        losses = run_steps(batches, loss_of, optimizer, lr, first_step=epoch * steps_per_epoch)
        epoch_losses.append(sum(loss.item() * len(index) for loss, index in zip(losses, indices)) / len(train))
        if on_epoch is not None:
            on_epoch(epoch + 1, f"train loss {epoch_losses[-1]:.4f}")
    return epoch_losses


@stage_task("teacher", tags=("distillery", "compute"))
def teacher_task(run: StageRun, runtime: RuntimeConfig) -> ArtifactRef:
    store, ref, request = run.store, run.ref, run.request
    device = resolve_device(runtime)
    train = load_split(request.data, "train")
    norm = normalization(request.data)
    torch.manual_seed(request.seed)
    model = build_teacher(request.teacher, train)
    progress = StageProgress("teacher", request.teacher.epochs)
    if request.teacher.weights is not None:
        path = weights_file(request.teacher.weights)
        load_weights(model, read_state_dict(path, origin=request.teacher.weights), origin=request.teacher.weights,
                     model_name=request.teacher.model)
        model.to(device)
        losses: list[float] = []
    else:
        model.to(device)
        losses = train_teacher(
            model, train, request.teacher, augment=request.data.augment_with(request.teacher.augment), norm=norm,
            seed=request.seed, device=device, runtime=runtime, on_epoch=progress,
        )
    write_tensors(store, ref, MODEL, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    metrics = {"final_train_loss": losses[-1]} if losses else {}
    if "val" in request.data_identity:  # the knobs are chosen on it; test is evaluate's to read, once
        metrics["val_top1"] = top1_accuracy(model, load_split(request.data, "val"), norm=norm, device=device,
                                            workers=runtime.workers)
        progress.info("teacher val top-1 %.4f", metrics["val_top1"])
    return run.finish(metrics=metrics, extra={
        "device": device.type,
        "model_input": {"channels": train.channels, "num_classes": train.num_classes, "image_size": train.image_size},
        "epoch_losses": losses,
    })
