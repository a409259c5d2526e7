"""One GPU per Dask worker, checked on CPU: with a faked CUDA device count the local cluster the
distill flow opens starts one worker per GPU and each worker process is given its own GPU in
``CUDA_VISIBLE_DEVICES``; the driver's own CUDA_VISIBLE_DEVICES list is what gets split; CPU runs
keep ``runtime.dask_workers`` workers and get no GPU."""

from __future__ import annotations

import os

import pytest
import torch
from distributed import Client

import flows.scale_out
from flows.gpu_workers import OneGpuPerWorker, visible_gpus
from tasks.runtime import RuntimeConfig


def _given(monkeypatch, runtime: RuntimeConfig) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES as each worker of the flow's local cluster for ``runtime`` sees it."""
    monkeypatch.setattr(flows.scale_out, "_api_url", lambda: "http://127.0.0.1:9/api")  # no Prefect needed here
    with OneGpuPerWorker(**flows.scale_out._local_cluster_kwargs(runtime)) as cluster, Client(cluster) as client:
        return sorted(client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES")).values(), key=str)


@pytest.mark.slow
def test_each_local_worker_is_given_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _given(monkeypatch, RuntimeConfig(task_runner="dask", dask_workers=2)) == ["0", "1", "2"]


@pytest.mark.slow
def test_cpu_runs_keep_their_worker_count_and_get_no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _given(monkeypatch, RuntimeConfig(task_runner="dask", dask_workers=2, device="cpu")) == [None, None]


def test_the_drivers_visible_devices_are_the_ones_split(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4, 5")
    assert visible_gpus(RuntimeConfig(task_runner="dask")) == ["4", "5"]
    assert visible_gpus(RuntimeConfig(task_runner="dask", device="cpu")) == []
