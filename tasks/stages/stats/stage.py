"""Stage `stats`: the per-class BatchNorm statistics pass and its @task entry
(:mod:`tasks.stages.stats` says what the stage does)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from storage.artifacts import ArtifactRef, StageRequest
from storage.file_names import CLASS_BN_STATS
from storage.tensor_files import write_tensors
from tasks.augment import AugmentConfig, augment_batch
from tasks.data import DataConfig, ImageSource, load_split, normalization
from tasks.data.batches import image_batches
from tasks.data.identity import SplitIdentity
from tasks.models import batchnorm_layers, load_teacher
from tasks.normalization import Normalization
from tasks.progress import StageProgress
from tasks.runtime import RuntimeConfig, generator, resolve_device
from tasks.stages.stats.config import StatsConfig
from tasks.stages.stage_task import StageRun, stage_task

ClassBNStats = dict[str, dict[str, torch.Tensor]]


class StatsRequest(StageRequest):
    stage = "stats"
    code_version = 1

    data: DataConfig
    data_identity: dict[str, SplitIdentity]  # the train split read
    stats: StatsConfig


class _ClassMoments:
    """float64 per-class sums of x and x^2 of one BN layer's input."""

    def __init__(self, num_classes: int, channels: int, device: torch.device) -> None:
        self.sum = torch.zeros(num_classes, channels, dtype=torch.float64, device=device)
        self.sum_sq = torch.zeros_like(self.sum)
        self.count = torch.zeros(num_classes, dtype=torch.float64, device=device)

    def add(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        x = x.detach().double()  # (B, C, H, W) or (B, C)
        reduce = tuple(range(2, x.ndim))
        per_sample = x[0, 0].numel()
        self.sum.index_add_(0, labels, x.sum(reduce) if reduce else x)
        self.sum_sq.index_add_(0, labels, (x * x).sum(reduce) if reduce else x * x)
        self.count.index_add_(0, labels, torch.full_like(labels, per_sample, dtype=torch.float64))

    def result(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1).unsqueeze(1)
        mean = self.sum / n
        var = (self.sum_sq / n - mean * mean).clamp(min=0)
        return {"mean": mean.cpu(), "var": var.cpu(), "count": self.count.cpu()}


@torch.no_grad()
def class_bn_stats(
    model: nn.Module,
    source: ImageSource,
    config: StatsConfig,
    *,
    augment: AugmentConfig,
    norm: Normalization,
    seed: int,
    device: torch.device,
    workers: int = 0,
    on_pass: Callable[[int, str], None] | None = None,
) -> ClassBNStats:
    """Per-class mean and biased variance of every BN layer's input, ``(K, C)`` float64 each; image files
    are decoded by ``workers`` processes, a few batches ahead."""
    model.eval()
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layer; class statistics need one")
    moments = {name: _ClassMoments(source.num_classes, bn.num_features, device) for name, bn in layers.items()}
    current_labels: list[torch.Tensor] = []

    def record(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        return lambda _module, args: moments[name].add(args[0], current_labels[0])

    handles = [bn.register_forward_pre_hook(record(name)) for name, bn in layers.items()]
    try:
        for pass_index in range(config.passes):
            gen = generator(seed, "stats", "pass", pass_index)
            batches = torch.arange(len(source)).split(config.batch_size)
            for index, images_u8 in image_batches(source, batches, workers=workers, device=device):
                images = augment_batch(images_u8.float() / 255, augment, gen)
                current_labels[:] = [source.labels[index].to(device)]
                model(norm.to_input(images))
            if on_pass is not None:
                on_pass(pass_index + 1, f"{len(source)} images")
    finally:
        for handle in handles:
            handle.remove()
    return {name: moment.result() for name, moment in moments.items()}


@stage_task("stats", tags=("distillery", "compute"))
def stats_task(run: StageRun, runtime: RuntimeConfig) -> ArtifactRef:
    store, ref, request = run.store, run.ref, run.request
    device = resolve_device(runtime)
    model = load_teacher(store, request.inputs["teacher"], device)
    train = load_split(request.data, "train")
    progress = StageProgress("stats", request.stats.passes)
    stats = class_bn_stats(
        model, train, request.stats, augment=request.data.augment_with(request.stats.augment),
        norm=normalization(request.data), seed=request.seed, device=device, workers=runtime.workers, on_pass=progress,
    )
    write_tensors(store, ref, CLASS_BN_STATS, stats)
    return run.finish(
        metrics={"bn_layers": float(len(stats)), "images_seen": float(len(train) * request.stats.passes)},
        extra={"device": device.type, "layers": list(stats)},
    )
