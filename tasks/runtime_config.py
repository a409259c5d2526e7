"""The `runtime` config section, apart from the torch code in :mod:`tasks.runtime` so that a config
loads, and is refused, without importing torch; and the one device fact known without torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Where a GPU driver shows itself: NVIDIA's driver, and the kernel driver ROCm builds of torch use.
GPU_DRIVER_PATHS = (Path("/proc/driver/nvidia/version"), Path("/dev/kfd"))


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


CUDA_MISSING = "runtime.device=cuda but no CUDA device is visible; use --device cpu or auto"


def no_gpu_driver() -> bool:
    """True when no GPU driver is loaded, so torch cannot see a CUDA device (checked without torch)."""
    return not any(path.exists() for path in GPU_DRIVER_PATHS)
