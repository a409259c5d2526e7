"""Real images chosen with the teacher, a class at a time: synthesis.mode=select, and the start of
recovery with synthesis.init=selected.

From a seeded sample of the class's training images (``selection.candidates``; validation and
test images are never candidates):

* ``easy`` (RDED): ``selection.crops`` random-resized crops of each candidate, each scored by the
  teacher's cross-entropy on the class; each candidate's lowest crop, then the class's IPC x f^2
  lowest of those. f = ``selection.factor``: with f = 1 the crops (resized to the image size)
  are the images; with f = 2 four crops, each resized to half the side, are tiled into one image.
* ``herding``: greedily the candidate that brings the mean of the chosen teacher features
  closest to the class's mean feature (over all candidates).
* ``kcenter``: the candidate nearest the class's mean feature, then greedily the one farthest
  from every image chosen so far (covering the class's feature distribution).
* ``kmeans``: a seeded k-means of the candidates' teacher features into IPC clusters (k-means++
  start, Lloyd's steps to a fixed point), then the candidate nearest each centre: every mode of
  the class once, without k-center's pull toward outliers.
* ``stratified`` (CCS, Zheng et al., ICLR 2023, with the final teacher's cross-entropy on the class
  as the difficulty score): candidates the teacher misclassifies are dropped (CCS's cut of the
  hardest, without a knob), the rest binned into IPC bins of equal width over their loss range,
  and the IPC images spread over the bins as evenly as they allow (the smallest bins first, what
  they cannot fill passed on), drawn at random within each: hard images as often as easy ones.
* ``hardest``: the IPC candidates the teacher classifies right with the highest cross-entropy on
  the class (all candidates when fewer than IPC are right): the teacher's least sure right
  answers, where its soft labels carry the most besides the class.
* ``kmeans_logits``: ``kmeans`` over the teacher's logits, centred per image, instead of its
  features: every mode of what the soft labels will say about the class.

Everything is drawn from generators seeded by (seed, class), so a class's selection is the same
bytes in any unit, process or run.

    chosen = select_class(teacher, train, label=3, ipc=10, config=selection, norm=norm, seed=0, device=device)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tasks.augment import crop_resize, sample_boxes
from tasks.data import ImageSource
from tasks.data.batches import read_images
from tasks.models import outputs_in_batches
from tasks.normalization import Normalization
from tasks.runtime import generator
from tasks.stages.synthesize.config import SelectionConfig


@torch.no_grad()
def select_class(teacher: nn.Module, train: ImageSource, *, label: int, ipc: int, config: SelectionConfig,
                 norm: Normalization, seed: int, device: torch.device, workers: int = 0) -> torch.Tensor:
    """``(ipc, C, H, W)`` uint8: class ``label``'s selected images, by ``config.criterion``."""
    members = torch.nonzero(train.labels == label).squeeze(1)
    order = torch.randperm(len(members), generator=generator(seed, "select", "candidates", label))
    pool = members[order[: config.candidates]].sort().values  # (P,) training-set indices
    images = read_images(train, pool, workers=workers, device=device)  # (P, C, H, W) uint8
    if config.criterion == "easy":
        return _easiest_crops(teacher, images, label=label, ipc=ipc, config=config, norm=norm,
                              gen=generator(seed, "select", "crops", label)).cpu()
    if config.criterion in ("stratified", "hardest", "kmeans_logits"):
        logits = outputs_in_batches(teacher, images, norm=norm, device=device)  # (P, K)
        if config.criterion == "kmeans_logits":  # centred: what a softmax at any temperature sees
            pick = _kmeans(logits - logits.mean(1, keepdim=True), ipc, generator(seed, "select", "kmeans", label))
        else:
            loss = F.cross_entropy(logits, torch.full((len(logits),), label), reduction="none")  # (P,)
            right = logits.argmax(1) == label
            pick = (_stratified(loss, right, ipc, generator(seed, "select", "strata", label))
                    if config.criterion == "stratified" else _hardest(loss, right, ipc))
        return images[pick.to(images.device)].cpu()
    feats = F.normalize(outputs_in_batches(teacher, images, norm=norm, device=device, features=True), dim=1)  # (P, D)
    if config.criterion == "kmeans":
        pick = _kmeans(feats, ipc, generator(seed, "select", "kmeans", label))
    else:
        pick = _herding(feats, ipc) if config.criterion == "herding" else _kcenter(feats, ipc)
    return images[pick.to(images.device)].cpu()


def _easiest_crops(teacher: nn.Module, images: torch.Tensor, *, label: int, ipc: int, config: SelectionConfig,
                   norm: Normalization, gen: torch.Generator) -> torch.Tensor:
    size, factor = images.shape[-1], config.factor
    x = images.float() / 255  # (P, C, H, W) in [0, 1]
    boxes = sample_boxes(gen, len(x) * config.crops, scale=(config.crop_scale, 1.0)).view(len(x), config.crops, 4)
    best_loss = torch.full((len(x),), float("inf"), device=x.device)
    best_box = boxes[:, 0].clone()
    no_flip = torch.zeros(len(x), dtype=torch.bool)
    teacher.eval()
    for k in range(config.crops):  # each candidate's lowest-loss crop
        crops = crop_resize(x, boxes[:, k], no_flip, size=size)
        target = torch.full((len(x),), label, device=x.device)
        loss = F.cross_entropy(teacher(norm.to_input(crops)).float(), target, reduction="none")  # (P,)
        better = (loss < best_loss).cpu()
        best_loss, best_box[better] = torch.minimum(loss, best_loss), boxes[better, k]
    chosen = torch.argsort(best_loss.cpu(), stable=True)[: ipc * factor * factor]  # the easiest first
    tiles = crop_resize(x[chosen.to(x.device)], best_box[chosen], no_flip[chosen], size=size // factor)  # (ipc*f*f, C, s, s)
    side = size // factor
    grid = tiles.view(ipc, factor, factor, x.shape[1], side, side).permute(0, 3, 1, 4, 2, 5)  # (ipc, C, f, s, f, s)
    return (grid.reshape(ipc, x.shape[1], size, size).clamp(0, 1) * 255).round().to(torch.uint8)


def _stratified(loss: torch.Tensor, right: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Indices of ``k`` rows: of the rows ``right`` marks (all rows when fewer than ``k`` are), binned
    into ``k`` bins of equal width over ``loss``, each bin's share of ``k`` drawn at random from it;
    the bins visited smallest first, each taking the remaining budget over the remaining bins."""
    pool = torch.nonzero(right).squeeze(1) if int(right.sum()) >= k else torch.arange(len(loss))
    low, high = float(loss[pool].min()), float(loss[pool].max())
    width = (high - low) / k or 1.0
    bin_of = ((loss[pool] - low) / width).floor().clamp(max=k - 1).long()  # (|pool|,) the top edge in the last bin
    bins = [pool[bin_of == b] for b in range(k)]
    chosen, budget = [], k
    for left, b in enumerate(sorted(range(k), key=lambda b: (len(bins[b]), b))):
        take = min(len(bins[b]), budget // (k - left))
        chosen.append(bins[b][torch.randperm(len(bins[b]), generator=gen)[:take]])
        budget -= take
    return torch.cat(chosen)


def _hardest(loss: torch.Tensor, right: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` rows of highest ``loss`` among those ``right`` marks (all rows when fewer
    than ``k`` are), highest first, ties in row order."""
    pool = torch.nonzero(right).squeeze(1) if int(right.sum()) >= k else torch.arange(len(loss))
    return pool[torch.argsort(loss[pool], descending=True, stable=True)[:k]]


def _herding(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of ``k`` rows whose running mean follows the mean of all rows as closely as possible."""
    target, total, chosen = feats.mean(0), torch.zeros_like(feats[0]), []
    available = torch.ones(len(feats), dtype=torch.bool, device=feats.device)
    for step in range(1, k + 1):
        distance = ((target - (total + feats) / step) ** 2).sum(1)  # (P,) distance of the new mean
        distance[~available] = float("inf")
        pick = int(distance.argmin())
        chosen.append(pick)
        total, available[pick] = total + feats[pick], False
    return torch.tensor(chosen)


def _kcenter(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of ``k`` rows, from the one nearest the mean, each next the farthest from those chosen."""
    first = int(_sq_dist(feats, feats.mean(0, keepdim=True))[:, 0].argmin())
    nearest = _sq_dist(feats, feats[first : first + 1])[:, 0]  # (P,) distance to the closest chosen row
    chosen = [first]
    for _ in range(k - 1):
        pick = int(nearest.argmax())
        chosen.append(pick)
        nearest = torch.minimum(nearest, _sq_dist(feats, feats[pick : pick + 1])[:, 0])
    return torch.tensor(chosen)


def _kmeans(feats: torch.Tensor, k: int, gen: torch.Generator, restarts: int = 4, max_steps: int = 100) -> torch.Tensor:
    """Indices of ``k`` distinct rows, each the nearest to a centre of a k-means of the rows (in centre
    order): the best of ``restarts`` k-means++ starts drawn from ``gen`` (the lowest within-cluster sum
    of squares; one start can settle with two centres in one cluster)."""
    best, best_cost = feats[:k], float("inf")
    for _ in range(restarts):
        centre = _lloyd(feats, _kmeans_pp(feats, k, gen), max_steps)
        cost = float(_sq_dist(feats, centre).min(1).values.sum())
        if cost < best_cost:
            best, best_cost = centre, cost
    distance, chosen = _sq_dist(best, feats), []  # (k, P)
    for c in range(k):
        distance[c, chosen] = float("inf")
        chosen.append(int(distance[c].argmin()))
    return torch.tensor(chosen)


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(len(a), len(b))`` squared distances, summed elementwise (no matmul, so no thread-dependent rounding)."""
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def _kmeans_pp(feats: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """``(k, D)`` starting centres: a random row, then each next drawn in proportion to its squared distance."""
    first = int(torch.randint(len(feats), (1,), generator=gen))
    centres, nearest = [feats[first]], _sq_dist(feats, feats[first : first + 1])[:, 0]
    for _ in range(k - 1):
        weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        pick = int(torch.multinomial(weights, 1, generator=gen))
        centres.append(feats[pick])
        nearest = torch.minimum(nearest, _sq_dist(feats, feats[pick : pick + 1])[:, 0])
    return torch.stack(centres)


def _lloyd(feats: torch.Tensor, centre: torch.Tensor, max_steps: int) -> torch.Tensor:
    """Lloyd's steps from ``centre`` until no centre moves (an emptied cluster keeps its centre)."""
    for _ in range(max_steps):
        assign = _sq_dist(feats, centre).argmin(1)  # (P,)
        moved = torch.stack([feats[assign == c].mean(0) if bool((assign == c).any()) else centre[c]
                             for c in range(len(centre))])
        if torch.equal(moved, centre):
            break
        centre = moved
    return centre
