"""One GPU per Dask worker: a local cluster on a CUDA machine starts one worker process per visible
GPU, each started with ``CUDA_VISIBLE_DEVICES`` naming its own GPU, so every worker computes on
``cuda:0`` of its own and two workers never share a device.

    distillery run --preset default --set runtime.task_runner=dask --device cuda
    # 4 GPUs visible -> 4 workers, CUDA_VISIBLE_DEVICES=0, 1, 2, 3 (or the entries of the
    # driver's own CUDA_VISIBLE_DEVICES, e.g. "4,5" -> workers on GPU 4 and on GPU 5)

CPU runs keep ``runtime.dask_workers`` workers and set nothing. On a cluster started elsewhere
(``runtime.dask_address``) start one worker per GPU yourself, as docs/operations.md shows.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from distributed import LocalCluster

from tasks.runtime import RuntimeConfig, device_tags


def visible_gpus(runtime: RuntimeConfig) -> list[str]:
    """The GPUs this run's local workers split, one each: none for CPU runs, else the entries of
    ``CUDA_VISIBLE_DEVICES`` when set, else ``0 .. device_count - 1``."""
    if not device_tags(runtime):
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    return [str(index) for index in range(torch.cuda.device_count())]


class OneGpuPerWorker(LocalCluster):
    """A :class:`distributed.LocalCluster` whose every new worker gets a GPU no live worker has
    (``CUDA_VISIBLE_DEVICES`` in its environment, set before the process starts); ``gpus`` empty:
    a plain local cluster."""

    def __init__(self, *, gpus: list[str] | tuple[str, ...] = (), **kwargs: Any) -> None:
        self.gpus = list(gpus)  # set first: LocalCluster's __init__ already asks for workers
        if self.gpus:
            kwargs["n_workers"] = len(self.gpus)
        super().__init__(**kwargs)

    async def _start(self) -> None:
        for name, worker in list(self.worker_spec.items()):  # the first workers, specified before any starts
            self.worker_spec[name] = self._with_free_gpu(worker)
        await super()._start()

    def new_worker_spec(self) -> dict[Any, dict[str, Any]]:
        """The next worker when scaling up (or replacing one), given a GPU no live worker has."""
        (name, worker), = super().new_worker_spec().items()
        return {name: self._with_free_gpu(worker)}

    def _with_free_gpu(self, worker: dict[str, Any]) -> dict[str, Any]:
        env = worker["options"].get("env", {})
        if not self.gpus or "CUDA_VISIBLE_DEVICES" in env:
            return worker
        taken = [spec["options"].get("env", {}).get("CUDA_VISIBLE_DEVICES") for spec in self.worker_spec.values()]
        gpu = next((gpu for gpu in self.gpus if gpu not in taken), self.gpus[len(taken) % len(self.gpus)])
        return {**worker, "options": {**worker["options"], "env": {**env, "CUDA_VISIBLE_DEVICES": gpu}}}
