"""The `normalization` artifact: a train split's per-channel mean and std, measured once.

Where neither ``data.mean``/``data.std`` nor the data set (Fashion-MNIST, CIFAR: one fixed set
of files, known values) gives the normalisation, the pipeline builds this small artifact
before the teacher: one streaming pass over the train split (decoded in worker processes,
integer sums, so the figures do not depend on batching or order), rounded to 4 decimals. The
pipeline then folds the figures and the channel count into ``data`` for every stage, so they
are part of every fingerprint and shown in every manifest's config.

    distillery run --until teacher --set data.name=imagefolder --set data.root=/data/my-folder
"""

from __future__ import annotations

import torch

from storage.artifacts import ArtifactRef, ArtifactStore, StageRequest
from tasks.stages.stage_task import StageRun, stage_task
from tasks.data import DataConfig, ImageSource, load_split
from tasks.data.batches import image_batches
from tasks.data.identity import SplitIdentity
from tasks.normalization import Normalization
from tasks.progress import StageProgress
from tasks.runtime import RuntimeConfig

BATCH = 128  # images summed at once: bounds the int32 copy (128 x 3 x 224 x 224 x 4 bytes = 77 MB)


class NormalizationRequest(StageRequest):
    stage = "normalization"
    code_version = 1

    data: DataConfig  # data.mean/std unset; seed is unused (no random draw), give 0
    data_identity: dict[str, SplitIdentity]  # the train split read


def measure_normalization(source: ImageSource, *, workers: int) -> Normalization:
    """Per-channel mean and (population) std of ``source``'s pixels in [0, 1] units, to 4 decimals."""
    total = torch.zeros(source.channels, dtype=torch.int64)
    total_sq = torch.zeros(source.channels, dtype=torch.int64)
    batches = torch.arange(len(source)).split(BATCH)
    for _, images in image_batches(source, batches, workers=workers, device=torch.device("cpu")):
        pixels = images.to(torch.int32)  # (B, C, H, W)
        total += pixels.sum((0, 2, 3), dtype=torch.int64)
        total_sq += (pixels * pixels).sum((0, 2, 3), dtype=torch.int64)
    count = len(source) * source.image_size * source.image_size
    mean = total.double() / count / 255
    std = (total_sq.double() / count / 255**2 - mean * mean).clamp(min=0).sqrt()
    return Normalization(tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std))


@stage_task("normalization", tags=("distillery", "compute"))
def normalization_task(run: StageRun, runtime: RuntimeConfig) -> ArtifactRef:
    train = load_split(run.request.data, "train")
    progress = StageProgress("normalization", 1)
    norm = measure_normalization(train, workers=runtime.workers)
    progress(1, f"{len(train)} images: mean {norm.mean} std {norm.std}")
    return run.finish(metrics={"images": float(len(train))},
                      extra={"mean": list(norm.mean), "std": list(norm.std), "channels": train.channels})


def with_measured_normalization(data: DataConfig, store: ArtifactStore, ref: ArtifactRef) -> DataConfig:
    """``data`` with the mean, std and channel count stored in the normalization artifact ``ref``."""
    manifest = store.read_manifest(ref)
    channels = (data.channels or manifest["channels"]) if data.name == "imagefolder" else None
    return data.model_copy(update={"mean": tuple(manifest["mean"]), "std": tuple(manifest["std"]),
                                   "channels": channels})
