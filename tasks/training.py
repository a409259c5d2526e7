"""Training, written once: the step loop, the learning-rate schedule and its setter, the
weight-decay rule and top-1.

Every optimisation in the pipeline is :func:`run_steps` over some batches: the teacher (an
epoch of real batches at a time), the soft- and hard-label students, and synthesis (whose
parameters are the pixels). Each step sets the step's learning rate (:class:`LearningRate`:
linear warm-up, then cosine decay to 0), computes the caller's loss, and takes one optimizer
step. Parameters without weight decay are chosen by module type, as torchvision's references
do (biases and normalisation layers), not by tensor rank.

    lr = LearningRate(peak=0.2, total_steps=6000, warmup_steps=500)
    optimizer = torch.optim.SGD(param_groups(model, weight_decay=1e-4), lr=lr.peak, momentum=0.9)
    losses = run_steps(batches, lambda b: F.cross_entropy(model(b.x), b.y), optimizer, lr)
    top1 = top1_accuracy(model, test, norm=norm, device=device)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

import torch
from torch import nn

from tasks.data.batches import image_batches
from tasks.data.sources import ImageSource
from tasks.normalization import Normalization

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
Batch = TypeVar("Batch")


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@dataclass(frozen=True)
class LearningRate:
    """The learning rate of each of ``total_steps`` steps: ``peak`` times :func:`warmup_cosine`."""

    peak: float
    total_steps: int
    warmup_steps: int = 0

    def at(self, step: int) -> float:
        return self.peak * warmup_cosine(step, warmup_steps=self.warmup_steps, total_steps=self.total_steps)

    def set(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        for group in optimizer.param_groups:
            group["lr"] = self.at(step)


def run_steps(
    batches: Iterable[Batch],
    loss_of: Callable[[Batch], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    lr: LearningRate,
    *,
    first_step: int = 0,
    after_step: Callable[[], None] | None = None,
) -> list[torch.Tensor]:
    """One optimizer step per batch, numbered from ``first_step`` for the schedule; the losses, detached."""
    losses = []
    for step, batch in enumerate(batches, start=first_step):
        lr.set(optimizer, step)
        loss = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        losses.append(loss.detach())
    return losses


def param_groups(model: nn.Module, *, weight_decay: float) -> list[dict]:
    """Two optimizer groups: weights with ``weight_decay``; biases and norm-layer parameters without."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            (no_decay if isinstance(module, NORM_LAYERS) or name == "bias" else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def top1_accuracy(
    model: nn.Module, source: ImageSource, *, norm: Normalization, device: torch.device, batch_size: int = 1000,
    workers: int = 0,
) -> float:
    """Fraction of ``source`` that ``model`` classifies correctly (eval mode); files decoded by ``workers``."""
    model.eval()
    correct = 0
    batches = torch.arange(len(source)).split(batch_size)
    for index, images in image_batches(source, batches, workers=workers, device=device):
        logits = model(norm.to_input(images))  # (B, K)
        correct += int((logits.argmax(1).cpu() == source.labels[index]).sum())
    return correct / len(source)
