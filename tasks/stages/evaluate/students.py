"""Training one student: on a store's replayed steps and soft labels (KL at temperature T), or
the hard-label baseline (cross-entropy, fresh seeded crops and flips); the recipe's optimizer and
learning-rate schedule; the same step loop as every other training (:func:`tasks.training.run_steps`).

    student = train_student(images, SoftLabelReader(url), config, num_classes=10, seed=0, runtime=runtime)
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from storage.softlabels import SoftLabelReader
from tasks.augment import AugmentConfig, augment_batch
from tasks.labels.replay import ReplayedSteps, StudentStep
from tasks.models import create_model
from tasks.runtime import RuntimeConfig, autocast, generator
from tasks.stages.evaluate.config import EvaluateConfig
from tasks.training import LearningRate, param_groups, run_steps


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


def student_lr(config: EvaluateConfig, *, total: int, steps_per_epoch: int) -> LearningRate:
    """The recipe's peak learning rate over ``total`` steps: its warm-up epochs (at most half the
    steps), then cosine decay."""
    recipe = config.settings()
    return LearningRate(recipe.lr, total_steps=total, warmup_steps=min(round(recipe.warmup_epochs * steps_per_epoch),
                                                                         total // 2))


def build_student(config: EvaluateConfig, images: torch.Tensor, *, num_classes: int, seed: int) -> nn.Module:
    """A fresh student for ``images`` (N, C, H, W), its initial weights drawn from ``seed``, on their device."""
    torch.manual_seed(seed)
    return create_model(config.model, channels=images.shape[1], num_classes=num_classes, image_size=images.shape[-1],
                        width=config.width, depth=config.depth).to(images.device)


def train_student(
    images: torch.Tensor, labels: SoftLabelReader, config: EvaluateConfig, *, num_classes: int, seed: int,
    runtime: RuntimeConfig,
) -> nn.Module:
    """Train one student on ``images`` (N, C, H, W), normalised on the device, and the store's steps."""
    student = build_student(config, images, num_classes=num_classes, seed=seed)
    optimizer = create_optimizer(student, config)
    steps = ReplayedSteps(images, labels, seed=seed, steps=config.total_steps(labels.attrs["steps_per_epoch"]))

    def loss_of(step: StudentStep) -> torch.Tensor:
        with autocast(images.device, runtime):
            logits = student(step.images).float()
        return soft_label_loss(logits, step.teacher_logits, config)

    student.train()
    run_steps(steps, loss_of, optimizer, student_lr(config, total=len(steps), steps_per_epoch=steps.steps_per_epoch))
    return student.eval()


def hard_label_batches(num_images: int, *, batch_size: int, total: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """``total`` batches of image indices: seeded permutations of the set, one epoch after another."""
    done = 0
    while done < total:
        for index in torch.randperm(num_images, generator=gen).split(batch_size):
            if done == total:
                return
            done += 1
            yield index


def train_student_hard(
    images: torch.Tensor, targets: torch.Tensor, config: EvaluateConfig, *, augment: AugmentConfig, num_classes: int,
    seed: int, runtime: RuntimeConfig,
) -> nn.Module:
    """The hard-label baseline: cross-entropy on the class labels, per-sample seeded crops and flips."""
    device = images.device
    student = build_student(config, images, num_classes=num_classes, seed=seed)
    optimizer = create_optimizer(student, config)
    gen = generator(seed, "evaluate", "hard")
    per_epoch = -(-len(images) // config.batch_size)
    total = config.total_steps(per_epoch)

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        batch = augment_batch(images[index.to(device)], augment, gen)
        with autocast(device, runtime):
            logits = student(batch).float()
        return F.cross_entropy(logits, targets[index.to(device)])

    student.train()
    run_steps(hard_label_batches(len(images), batch_size=config.batch_size, total=total, gen=gen), loss_of, optimizer,
              student_lr(config, total=total, steps_per_epoch=per_epoch))
    return student.eval()
