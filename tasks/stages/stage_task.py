"""A stage's Prefect entry and the caching rule of every stage, defined once.

A stage's Prefect cache key is its artifact fingerprint, never a pickled input or a path:

* manifest on disk and a Prefect cache record  -> the task run is ``Cached``;
* manifest on disk, no record (fresh machine)  -> the task body finds the manifest and returns
  a ``Cached`` state (:func:`reused`), so reuse reads the same whatever the Prefect home;
* record but no manifest (artifact deleted)    -> ``refresh_cache`` recomputes it;
* manifest on disk, a file differs from its checksum -> the run fails naming the file and the fix
  (every file of a reused artifact is re-hashed first: its own files and, through the stages
  before it, everything it opens).

Stage entries are declared with :func:`stage_task` and called from flows with
:func:`run_stage`. The wrapper holds the opening every stage shares (open the store, return
the reference when the artifact is complete, take its lock, start the clock) and hands the
body a :class:`StageRun`, whose :meth:`StageRun.finish` writes the manifest with the seconds.
Results (an :class:`ArtifactRef`, a few bytes of JSON) persist in Prefect's local result
storage, so cache records outlive the temporary server's database.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from prefect import Task, task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.states import Completed, State

from storage.artifacts import ArtifactRef, ArtifactStore, StageRequest
from storage.locks import artifact_lock
from storage.verify import verify_artifact


@dataclass
class StageFingerprint(CachePolicy):
    """Cache key = the fingerprint of the task's ``request`` argument."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        request = inputs.get("request")
        if not isinstance(request, StageRequest):
            return None
        return f"{request.stage}-{request.fingerprint()}"


@dataclass
class StageRun:
    """One build of a stage's artifact: where it goes, what asked for it, when it started."""

    store: ArtifactStore
    ref: ArtifactRef
    request: StageRequest
    started: float

    def finish(self, *, metrics: dict[str, float], extra: dict[str, Any] | None = None) -> ArtifactRef:
        """Write the manifest (last, atomically: the artifact is complete from here on)."""
        self.store.write_manifest(self.ref, self.request, metrics=metrics, seconds=time.perf_counter() - self.started,
                                  extra=extra)
        return self.ref


def stage_task(stage: str, *, tags: tuple[str, ...] = ()) -> Callable[[Callable[[StageRun, Any], ArtifactRef]], Task[..., ArtifactRef]]:
    """Declare a stage's Prefect entry ``entry(request, runtime)``: named after the stage, cached by fingerprint.

    The body ``fn(run, runtime)`` runs only when the artifact has no manifest yet under
    ``runtime.artifact_root`` (otherwise the stored reference is returned), and only under the
    artifact's lock, so two concurrent runs build it once.
    """

    def declare(fn: Callable[[StageRun, Any], ArtifactRef]) -> Task[..., ArtifactRef]:
        def entry(request: StageRequest, runtime: Any) -> ArtifactRef:
            store, ref = ArtifactStore(runtime.artifact_root), request.ref()
            if store.is_complete(ref):
                return reused(ref)  # built before, maybe on another machine or under another Prefect home
            with artifact_lock(store, ref, on_wait=lambda: _log(f"{ref} is being built by another run; waiting for it")):
                if store.is_complete(ref):
                    _log(f"{ref} was built by another run meanwhile; reusing it")
                    return reused(ref)
                _log(f"building {ref}")
                return fn(StageRun(store, ref, request, time.perf_counter()), runtime)

        entry.__name__, entry.__qualname__, entry.__module__ = fn.__name__, fn.__qualname__, fn.__module__
        entry.__doc__ = fn.__doc__

        return task(
            entry,
            name=stage,
            cache_policy=StageFingerprint(),
            persist_result=True,
            result_serializer="json",
            tags=list(tags),
        )

    return declare


def reused(ref: ArtifactRef) -> ArtifactRef | State:
    """What an entry returns for an artifact it found complete: inside a Prefect task run, a ``Cached``
    state holding the reference (so the run, the summary and the dashboard say so, whatever the
    Prefect home); called as a plain function, the reference."""
    return Completed(name="Cached", data=ref) if TaskRunContext.get() is not None else ref


class StageJob(Protocol):
    """A stage built in independent units (synthesis shards, relabel chunks, student seeds), each
    saved whole as it finishes: ``len(job)`` units, ``pending()`` the ones not saved yet,
    ``intact(unit)`` whether a saved one still reads back whole (one that does not is redone,
    never sealed into the finished artifact)."""

    def __len__(self) -> int: ...

    def pending(self) -> list[int]: ...

    def intact(self, unit: int) -> bool: ...

    def build(self, unit: int) -> None: ...


def units_in_order(job: StageJob, stage: str) -> Iterator[int]:
    """Every unit of ``job`` in order, each built first when no earlier run saved it: the resume loop
    of every splittable stage (a killed run picks up at its first missing unit). Units an earlier run
    saved are read back first: one damaged since (a torn copy, a bad disk) is built again, not sealed
    into the artifact's manifest as if whole."""
    pending = set(job.pending())
    damaged = damaged_units(job, pending)
    pending |= set(damaged)
    _log(f"{stage}: {len(job)} units, {len(pending)} to do"
         + (f" (saved units {damaged} no longer read back whole: built again)" if damaged else ""))
    for unit in range(len(job)):
        if unit in pending:
            job.build(unit)
        yield unit


def damaged_units(job: StageJob, pending: set[int]) -> list[int]:
    """The units an earlier run saved (all but ``pending``) that no longer read back whole."""
    return [unit for unit in range(len(job)) if unit not in pending and not job.intact(unit)]


def _log(message: str) -> None:
    (get_run_logger() if TaskRunContext.get() is not None else logging.getLogger("distillery")).info(message)


def run_stage(
    stage: Task[..., ArtifactRef], request: StageRequest, *, extra_tags: frozenset[str] = frozenset(), **kwargs: Any
) -> State:
    """Call a stage entry from a flow; recompute when its artifact is gone from the root, and re-read
    a complete one against its manifest's checksums first (ArtifactError when damaged: a run never
    reuses, and so never passes on, a damaged artifact). ``extra_tags`` join the stage's own (e.g.
    ``gpu``, for a tag concurrency limit)."""
    store = ArtifactStore(kwargs["runtime"].artifact_root)
    complete = store.is_complete(request.ref())
    if complete:
        verify_artifact(store, request.ref())
    return stage.with_options(refresh_cache=not complete, tags=set(stage.tags) | extra_tags)(
        request=request, return_state=True, **kwargs
    )
