"""The units of the splittable stages, as one Prefect task a scaled-out flow maps.

Three stages save their work in independent units: a synthesis shard (one class's batch), a
relabel chunk, a student seed. Each stage module has a job class that loads what the units
need and builds one unit into the artifact folder; the stage entry builds whatever is still
missing and assembles. A flow on a parallel task runner maps :func:`unit_task` over the
pending units first, so the stage entry only assembles: the same functions, the same bytes.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.artifacts import StageRequest
from tasks.runtime import RuntimeConfig
from tasks.stages import SAVED_BY_UNIT
from tasks.stages.evaluate import EvaluateJob
from tasks.stages.relabel import RelabelJob
from tasks.stages.stage_task import StageJob
from tasks.stages.synthesize import SynthesisJob

JOBS: dict[str, type[StageJob]] = dict(zip(SAVED_BY_UNIT, (SynthesisJob, RelabelJob, EvaluateJob)))


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
