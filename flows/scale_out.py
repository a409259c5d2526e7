"""Scale-out: the Dask task runner a config asks for, and the mapping of a stage's units onto it.

With ``runtime.task_runner=dask`` the distill flow opens a :class:`prefect_dask.DaskTaskRunner`
(a local cluster of ``runtime.dask_workers`` one-thread processes, one per GPU on a CUDA machine,
or the scheduler at
``runtime.dask_address``) and, before each splittable stage, maps :func:`tasks.stages.units.unit_task`
over the units still missing. The stage entry then finds them saved and only assembles, so the
artifact is the same bytes as a sequential run's. Only references and configs travel to the
workers; the units are files under the artifact root, which every worker must reach.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from prefect.client.orchestration import get_client
from prefect.futures import PrefectFutureList, as_completed
from prefect.logging import get_run_logger
from prefect.task_runners import TaskRunner
from prefect.utilities.annotations import unmapped

from flows.gpu_workers import OneGpuPerWorker, visible_gpus
from storage.artifacts import ArtifactStore, StageRequest
from tasks.progress import record_progress
from tasks.runtime import RuntimeConfig, device_tags
from tasks.stages.units import open_job, unit_task

if TYPE_CHECKING:
    from distributed import Worker

HEARTBEAT_RACE = "Failed to communicate with scheduler during heartbeat"


@contextmanager
def unit_runner(runtime: RuntimeConfig) -> Iterator[TaskRunner | None]:
    """The started Dask runner for ``runtime``, or None for a sequential run."""
    if runtime.task_runner == "sequential":
        yield None
        return
    from prefect_dask import DaskTaskRunner

    if runtime.dask_address:
        runner = DaskTaskRunner(address=runtime.dask_address)
    else:
        runner = DaskTaskRunner(cluster_class=OneGpuPerWorker, cluster_kwargs=_local_cluster_kwargs(runtime))
    with runner:
        yield runner


@contextmanager
def shared_cluster(runtime: RuntimeConfig) -> Iterator[RuntimeConfig]:
    """For a flow of many distill runs (a sweep): one local cluster for all of them, passed on
    as ``dask_address``; ``runtime`` unchanged when it is sequential or already has an address."""
    if runtime.task_runner == "sequential" or runtime.dask_address:
        yield runtime
        return
    with OneGpuPerWorker(**_local_cluster_kwargs(runtime)) as cluster:
        yield runtime.model_copy(update={"dask_address": cluster.scheduler_address})


def _local_cluster_kwargs(runtime: RuntimeConfig) -> dict[str, object]:
    # One thread per worker process: torch in each process then uses one core. The dashboard
    # stays off (no bokeh); the scheduler still serves its health routes over HTTP, which would
    # take port 8787 (and warn when another run has it), so they get a free local port instead.
    # The workers report to this run's API; without it each would start a temporary server of its own.
    # Each worker process imports this module at start-up and runs its dask_setup.
    # On a CUDA machine one worker per visible GPU, each given its own (flows/gpu_workers.py).
    return {"gpus": visible_gpus(runtime), "n_workers": runtime.dask_workers, "threads_per_worker": 1,
            "processes": True, "host": "127.0.0.1",
            "dashboard_address": None, "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
            "env": {"PREFECT_API_URL": _api_url()}, "preload": [__name__]}


def dask_setup(worker: Worker) -> None:
    """Dask's preload hook, run in each worker process of a local cluster as it starts."""
    logging.getLogger("distributed.worker").addFilter(QuietShutdownRace(worker))


class QuietShutdownRace(logging.Filter):
    """Drops the error (with its traceback) Dask logs when a heartbeat is in flight as its worker
    closes: a race inside Dask (the worker closes its connections, the heartbeat finds them gone).
    A run stopped by a signal promises no traceback, and the closing is no news."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        from distributed.core import Status

        closing = self.worker.status in (Status.closing, Status.closing_gracefully, Status.closed)
        return not (closing and record.getMessage().startswith(HEARTBEAT_RACE))


def _api_url() -> str:
    with get_client(sync_client=True) as client:
        return str(client.api_url)


def map_units(runner: TaskRunner, requests: list[StageRequest], runtime: RuntimeConfig) -> int:
    """Build the missing units of every request on ``runner``, all at once (the replicates of a
    report point train their students side by side); return how many were mapped."""
    store, pending = ArtifactStore(runtime.artifact_root), []
    for request in requests:
        job = None if store.is_complete(request.ref()) else open_job(request, runtime)
        pending += [(request, unit) for unit in (job.pending() if job is not None else [])]
    if pending:
        stages = sorted({request.stage for request, _ in pending})
        get_run_logger().info("%s: mapping %d units onto %s", "+".join(stages), len(pending), type(runner).__name__)
        entry, started = unit_task.with_options(tags=set(unit_task.tags) | device_tags(runtime)), time.perf_counter()
        futures: PrefectFutureList = runner.map(entry, parameters={
            "request": [request for request, _ in pending], "runtime": unmapped(runtime),
            "unit": [unit for _, unit in pending]})
        record_progress(stages[0], 0, len(pending))
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()  # raises the first failed unit's error
            record_progress(stages[0], done, len(pending))  # what a stopped run reports
        # The stage's own manifest times only what its entry does after this (assembling the units).
        get_run_logger().info("%s: %d units built on %s in %.1f s", "+".join(stages), len(pending),
                              type(runner).__name__, time.perf_counter() - started)
    return len(pending)
