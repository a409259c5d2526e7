"""What every training loop shares: the learning-rate schedule and the weight-decay rule.

One schedule (linear warm-up, then cosine decay to 0) serves the teacher, the synthesis loop
and the students; one rule picks the parameters that get no weight decay, by module type as
torchvision's references do (biases and normalisation layers), not by tensor rank.

    factor = warmup_cosine(step, warmup_steps=500, total_steps=6000)   # in [0, 1]
    optimizer = torch.optim.SGD(param_groups(model, weight_decay=1e-4), lr=0.2, momentum=0.9)
"""

from __future__ import annotations

import math

from torch import nn

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def param_groups(model: nn.Module, *, weight_decay: float) -> list[dict]:
    """Two optimizer groups: weights with ``weight_decay``; biases and norm-layer parameters without."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            (no_decay if isinstance(module, NORM_LAYERS) or name == "bias" else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
