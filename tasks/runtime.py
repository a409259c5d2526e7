"""What the `runtime` config section (:mod:`tasks.runtime_config`) decides: device, precision,
threads, seeds.

Nothing here changes what a stage computes except the seed; the device and precision are
recorded in manifests but kept out of fingerprints, so a laptop-made teacher is reused on a
GPU machine that shares the artifact root.
"""

from __future__ import annotations

import hashlib

import torch

from tasks.runtime_config import CUDA_MISSING, DeviceError, RuntimeConfig

__all__ = ["GPU_TAG", "DeviceError", "RuntimeConfig", "autocast", "derive_seed", "device_tags", "generator",
           "resolve_device"]


def resolve_device(runtime: RuntimeConfig) -> torch.device:
    if runtime.threads is not None:
        torch.set_num_threads(runtime.threads)
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise DeviceError(CUDA_MISSING)
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
