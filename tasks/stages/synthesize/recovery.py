"""The image-recovery loop synthesis runs per unit: match BatchNorm statistics, classify as the label.

Per step: one random-resized-crop and flip shared by the batch, a random roll (jitter), then
``CE(teacher(x), y) + r_bn * sum_l w_l (||mu_l - mu*_l||_2 + ||var_l - var*_l||_2)`` with
``w_1 = first_bn_weight``; Adam(betas 0.5, 0.9), cosine LR, pixels clipped every step, the last
iterate returned as uint8. The targets are one class's stored moments (lpld) or the teacher's
running statistics (sre2l), or those moments pooled over classes (sre2l, ``sre2l_statistics=pooled``).

    targets = bn_targets_for("lpld", teacher, class_stats, label=3, device=device)
    images_u8, losses, curve = optimise_unit(teacher, start, labels, targets, config, crop_scale_min=0.5, flip=True,
                                             norm=norm, gen=gen, runtime=runtime)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tasks.augment import crop_resize, sample_boxes, sample_flips
from tasks.models import batchnorm_layers
from tasks.normalization import Normalization
from tasks.runtime import RuntimeConfig, autocast
from tasks.stages.synthesize.config import SynthesisConfig, SynthesisError
from tasks.stages.synthesize.loss_curve import curve_windows
from tasks.training import LearningRate, run_steps


class BNMatchLoss:
    """Forward hooks adding, per BN layer, the distance of the batch's input moments to targets."""

    def __init__(self, model: nn.Module, targets: dict[str, tuple[torch.Tensor, torch.Tensor]], first_weight: float):
        self.terms: list[torch.Tensor] = []
        layers = batchnorm_layers(model)
        weights = {name: (first_weight if i == 0 else 1.0) for i, name in enumerate(layers)}

        def hook(name: str):
            mean_t, var_t = targets[name]

            def record(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                x = args[0].float()
                dims = [0, *range(2, x.ndim)]
                mean, var = x.mean(dims), x.var(dims, unbiased=False)
                self.terms.append(weights[name] * (torch.norm(mean - mean_t, 2) + torch.norm(var - var_t, 2)))

            return record

        self.handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in layers.items()]

    def take(self) -> torch.Tensor:
        total, self.terms = torch.stack(self.terms).sum(), []
        return total

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def optimise_unit(
    model: nn.Module,
    start: torch.Tensor,
    labels: torch.Tensor,
    bn_targets: dict[str, tuple[torch.Tensor, torch.Tensor]],
    config: SynthesisConfig,
    *,
    crop_scale_min: float,
    flip: bool,
    norm: Normalization,
    gen: torch.Generator,
    runtime: RuntimeConfig,
) -> tuple[torch.Tensor, dict[str, float], np.ndarray]:
    """Optimise ``start`` (B, C, H, W), normalised, on its device.

    Returns the uint8 images, the final losses and the loss curve: ``(points, 3)`` float32
    rows of (total, CE, BN) averaged over consecutive windows of the iterations, so one curve
    shows whether the unit had converged.
    """
    device, size = start.device, start.shape[-1]
    x = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=config.lr, betas=(0.5, 0.9))
    matcher = BNMatchLoss(model, bn_targets, config.first_bn_weight)
    window = curve_windows(config.iterations)  # (iterations,) window of each iteration
    points = int(window[-1]) + 1
    curve = torch.zeros(points, 3, dtype=torch.float64)
    last: dict[str, Any] = {}  # the latest step and its loss terms

    def loss_of(step: int) -> torch.Tensor:
        box = sample_boxes(gen, 1, scale=(crop_scale_min, 1.0)).expand(len(x), 4)
        flips = (sample_flips(gen, 1) & flip).expand(len(x))
        shift = torch.randint(-config.jitter, config.jitter + 1, (2,), generator=gen).tolist()
        view = torch.roll(crop_resize(x, box, flips, size=size), shifts=shift, dims=(2, 3))
        with autocast(device, runtime):
            ce = F.cross_entropy(model(view).float(), labels)
        bn = matcher.take()
        loss = ce + config.r_bn * bn
        if not torch.isfinite(loss):
            raise SynthesisError(
                f"synthesis loss became {loss.item()} at iteration {step} for classes "
                f"{sorted(set(labels.tolist()))}; lower synthesis.lr (now {config.lr}) or synthesis.r_bn"
            )
        last.update(step=step, loss=loss, ce=ce, bn=bn)
        return loss

    def after_step() -> None:
        with torch.no_grad():
            x.copy_(norm.clip(x))
            curve[window[last["step"]]] += torch.stack([last["loss"], last["ce"], last["bn"]]).detach().double().cpu()

    try:
        run_steps(range(config.iterations), loss_of, optimizer, LearningRate(config.lr, total_steps=config.iterations),
                  after_step=after_step)
    finally:
        matcher.remove()
    counts = torch.bincount(window, minlength=points).double()
    losses = {"loss": last["loss"].item(), "ce": last["ce"].item(), "bn": last["bn"].item()}
    return norm.to_uint8(x.detach()).cpu(), losses, (curve / counts[:, None]).float().numpy()


def bn_targets_for(
    mode: str, model: nn.Module, class_stats: dict | None, label: int, device: torch.device
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """lpld: class ``label``'s stored moments; sre2l with class statistics given: their pool over
    all classes; sre2l without: the teacher's running statistics."""
    if mode == "lpld":
        return {name: (s["mean"][label].float().to(device), s["var"][label].float().to(device)) for name, s in class_stats.items()}
    if class_stats is not None:
        return {name: tuple(m.float().to(device) for m in pooled_moments(s)) for name, s in class_stats.items()}
    return {name: (bn.running_mean.float(), bn.running_var.float()) for name, bn in batchnorm_layers(model).items()}


def pooled_moments(stats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance over all classes together, from each class's (K, C) moments and counts."""
    weights = (stats["count"] / stats["count"].sum()).unsqueeze(1)  # (K, 1)
    mean = (weights * stats["mean"]).sum(0)  # (C,)
    second = (weights * (stats["var"] + stats["mean"] ** 2)).sum(0)
    return mean, (second - mean**2).clamp(min=0)
