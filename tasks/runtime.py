"""The `runtime` config section and what it decides: device, precision, threads, seeds.

Nothing here changes what a stage computes except the seed; the device and precision are
recorded in manifests but kept out of fingerprints, so a laptop-made teacher is reused on a
GPU machine that shares the artifact root.
"""

from __future__ import annotations

import hashlib
import os
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    seed: int = Field(0, ge=0, description="Root of every random draw; each stage derives its own.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when present.")
    amp: bool = Field(True, description="Mixed precision (bfloat16 autocast) on CUDA; ignored on CPU.")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; None keeps torch's choice.")
    workers: int = Field(
        default_factory=lambda: min(4, os.cpu_count() or 1), ge=0, le=64,
        description="DataLoader processes decoding image files (ImageFolder); 0 decodes in the main process. "
        "Default: min(4, CPU cores)."
    )
    artifact_root: str = Field(
        "artifacts", description="Local path or fsspec URI holding the artifact tree."
    )
    task_runner: Literal["sequential", "dask"] = Field(
        "sequential", description="dask: map synthesis shards, relabel chunks and evaluation seeds onto Dask "
        "workers (prefect-dask); same bytes as sequential."
    )
    dask_address: str | None = Field(
        None, description="Scheduler of an existing Dask cluster (tcp://host:8786); None starts a local one."
    )
    dask_workers: int = Field(2, ge=1, le=1024, description="Worker processes of the local Dask cluster (1 thread each).")


class DeviceError(RuntimeError):
    """The requested device is not available."""


def resolve_device(runtime: RuntimeConfig) -> torch.device:
    if runtime.threads is not None:
        torch.set_num_threads(runtime.threads)
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("runtime.device=cuda but no CUDA device is visible; use --device cpu or auto")
    if runtime.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


GPU_TAG = "gpu"


def device_tags(runtime: RuntimeConfig) -> frozenset[str]:
    """``{"gpu"}`` for runs that will use CUDA: Prefect's tag concurrency limit
    (``prefect concurrency-limit create gpu 1``) then caps how many run on a machine's GPU at once."""
    uses_cuda = runtime.device == "cuda" or (runtime.device == "auto" and torch.cuda.is_available())
    return frozenset({GPU_TAG} if uses_cuda else ())


def autocast(device: torch.device, runtime: RuntimeConfig) -> torch.autocast:
    """bfloat16 autocast on CUDA when `runtime.amp`; a disabled context elsewhere."""
    enabled = runtime.amp and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for one named use (stage, class, epoch, ...) of the root seed."""
    text = "/".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def generator(seed: int, *parts: object) -> torch.Generator:
    """A CPU generator for one named use; draws are moved to the device afterwards."""
    return torch.Generator().manual_seed(derive_seed(seed, *parts))
