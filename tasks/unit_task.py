"""The units of the splittable stages, as one Prefect task a scaled-out flow maps.

Three stages save their work in independent units: a synthesis shard (one class's batch), a
relabel chunk, a student seed. Each stage module has a job class that loads what the units
need and builds one unit into the artifact folder; the stage entry builds whatever is still
missing and assembles. A flow on a parallel task runner maps :func:`unit_task` over the
pending units first, so the stage entry only assembles: the same functions, the same bytes.
"""

from __future__ import annotations

from typing import Protocol

from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.artifacts import StageRequest
from tasks.evaluate import EvaluateJob
from tasks.relabel import RelabelJob
from tasks.runtime import RuntimeConfig
from tasks.synthesize import SynthesisJob


class StageJob(Protocol):
    def pending(self) -> list[int]: ...

    def build(self, unit: int) -> None: ...


JOBS: dict[str, type] = {"synthesize": SynthesisJob, "relabel": RelabelJob, "evaluate": EvaluateJob}


def open_job(request: StageRequest, runtime: RuntimeConfig) -> StageJob | None:
    """The job of ``request``'s stage, or None for a stage built in one piece (teacher, stats, prune)."""
    job = JOBS.get(request.stage)
    return job(request, runtime) if job is not None else None


@task(name="unit", cache_policy=NO_CACHE, tags=["distillery", "compute"],
      task_run_name="{request.stage}-unit-{unit}")
def unit_task(request: StageRequest, runtime: RuntimeConfig, unit: int) -> int:
    """Build one unit of ``request`` (skipped when an earlier try saved it); return its index."""
    job = open_job(request, runtime)
    if unit in job.pending():
        job.build(unit)
    return unit
