"""Within-class diversity of an image set, seen through the teacher.

Mean pairwise cosine similarity of the teacher's penultimate features among one class's
images (diagonal excluded), averaged over classes. Lower means more diverse; LPLD's claim is
that class-wise synthesis lowers it relative to SRe2L.

    per_class = within_class_similarities(teacher, images_u8, labels, norm=norm, device=device)  # {class: sim}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tasks.models import outputs_in_batches
from tasks.normalization import Normalization


@torch.no_grad()
def within_class_similarities(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, norm: Normalization, device: torch.device
) -> dict[int, float]:
    """``{class: mean pairwise cosine similarity}`` for every class with two or more images."""
    per_class = {}
    for c in labels.unique().tolist():
        members = images[labels == c]
        if len(members) < 2:
            continue
        feats = F.normalize(outputs_in_batches(model, members, norm=norm, device=device, features=True), dim=1)  # (n, D)
        sim = feats @ feats.T  # (n, n)
        n = len(members)
        per_class[int(c)] = float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))
    if not per_class:
        raise ValueError("within-class similarity needs at least two images of some class")
    return per_class


@torch.no_grad()
def label_agreement(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, norm: Normalization, device: torch.device
) -> float:
    """Fraction of ``images`` the model assigns to their own label."""
    predicted = outputs_in_batches(model, images, norm=norm, device=device).argmax(1)
    return float((predicted == labels).float().mean())
