"""The caching rule of every stage, defined once.

A stage's Prefect cache key is its artifact fingerprint, never a pickled input or a path:

* manifest on disk and a Prefect cache record  -> the task run is ``Cached``;
* manifest on disk, no record (fresh machine)  -> the task body finds the manifest and returns;
* record but no manifest (artifact deleted)    -> ``refresh_cache`` recomputes it.

Stage entries are declared with :func:`stage_task` and called from flows with
:func:`run_stage`; results (an :class:`ArtifactRef`, a few bytes of JSON) persist in Prefect's
local result storage, so cache records outlive the temporary server's database.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from prefect import Task, task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.states import State

from storage.artifacts import ArtifactRef, ArtifactStore, StageRequest
from storage.locks import artifact_lock

R = TypeVar("R")


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


def stage_task(stage: str, *, tags: tuple[str, ...] = ()) -> Callable[[Callable[..., R]], Task[..., R]]:
    """Declare a stage's Prefect entry: named after the stage, cached by fingerprint.

    The entry is ``fn(request, runtime, ...)``; its body runs only when the artifact has no
    manifest yet under ``runtime.artifact_root`` (otherwise the stored reference is returned),
    and only under the artifact's lock, so two concurrent runs build it once.
    """

    def declare(fn: Callable[..., R]) -> Task[..., R]:
        @functools.wraps(fn)
        def entry(request: StageRequest, runtime: Any, *args: Any, **kwargs: Any) -> R:
            store, ref = ArtifactStore(runtime.artifact_root), request.ref()
            if store.is_complete(ref):
                return ref  # type: ignore[return-value]  # built before, maybe on another machine
            with artifact_lock(store, ref, on_wait=lambda: _log(f"{ref} is being built by another run; waiting for it")):
                if store.is_complete(ref):
                    _log(f"{ref} was built by another run meanwhile; reusing it")
                    return ref  # type: ignore[return-value]
                _log(f"building {ref}")
                return fn(request, runtime, *args, **kwargs)

        return task(
            entry,
            name=stage,
            cache_policy=StageFingerprint(),
            persist_result=True,
            result_serializer="json",
            tags=list(tags),
        )

    return declare


def _log(message: str) -> None:
    (get_run_logger() if TaskRunContext.get() is not None else logging.getLogger("distillery")).info(message)


def run_stage(
    stage: Task[..., ArtifactRef], request: StageRequest, *, extra_tags: frozenset[str] = frozenset(), **kwargs: Any
) -> State:
    """Call a stage entry from a flow; recompute when its artifact is gone from the root.
    ``extra_tags`` join the stage's own (e.g. ``gpu``, for a tag concurrency limit)."""
    complete = ArtifactStore(kwargs["runtime"].artifact_root).is_complete(request.ref())
    return stage.with_options(refresh_cache=not complete, tags=set(stage.tags) | extra_tags)(
        request=request, return_state=True, **kwargs
    )
