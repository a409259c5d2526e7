"""The `distill` flow: the pipeline for one config, composed from stage entries.

No computation here: each stage is called through ``run_stage`` (cache by fingerprint,
recompute when the artifact is gone), only ArtifactRefs pass between stages, and the flow
publishes a summary table to the Prefect dashboard. Each data split's identity names the stages
that read it and is checked again at the end (:mod:`flows.data_watch`); a run through evaluate
adds a row to its history (:mod:`flows.history`). With ``runtime.task_runner=dask`` the units
of synthesis, relabel and evaluate are mapped onto Dask workers first (:mod:`flows.scale_out`).

    distillery run --until stats          # the CLI wraps this flow
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Callable

import numpy as np
from prefect import Task, flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import deployment
from prefect.states import State
from pydantic import BaseModel

from flows import history
from flows.config import DistilleryConfig, PresetRef, config_of
from flows.data_watch import DataChangedError, DataWatch
from flows.pipeline import STAGES, Stage, data_identity, last_before_evaluate, replicate_runs, run_pipeline
from flows.scale_out import map_units, unit_runner
from flows.shutdown import stop_if_signalled
from flows.tables import render_table
from storage.artifacts import ArtifactRef, ArtifactStore, StageRequest
from storage.file_names import IMAGES
from storage.image_store import grid_png, png_data_uri, read_image_store
from tasks.data import load_split
from tasks.runtime import device_tags
from tasks.stages.stage_task import run_stage

__all__ = ["STAGES", "DataChangedError", "StageOutcome", "distill"]


class StageOutcome(BaseModel):
    """What the flow reports per stage: the artifact, its Prefect state and its manifest figures
    (and the replicate it served, in a run of several)."""

    ref: ArtifactRef
    state: str
    path: str
    seconds: float
    metrics: dict[str, float]
    replicate: int = 0


def _outcome(store: ArtifactStore, state: State) -> StageOutcome:
    ref: ArtifactRef = state.result()
    manifest = store.read_manifest(ref)
    return StageOutcome(
        ref=ref, state=state.name, path=store.location(ref), seconds=manifest["seconds"], metrics=manifest["metrics"]
    )


def summary_rows(outcomes: list[StageOutcome]) -> list[dict[str, str]]:
    """One short row per stage, its figures in one ``metrics`` column, the result (test top-1)
    first, so it stays in view in a terminal and in the dashboard's table."""
    return [{"stage": o.ref.stage, "state": o.state, "built in s": f"{o.seconds:.1f}",
             "metrics": ", ".join(f"{k}={o.metrics[k]:.4g}" for k in sorted(o.metrics, key=_result_first)),
             "fingerprint": o.ref.fingerprint[:12]}
            for o in outcomes]


def dashboard_rows(outcomes: list[StageOutcome]) -> list[dict[str, str]]:
    """The summary for the dashboard: one row per stage and metric (the result first), so no cell
    is wider than a metric; the dashboard's table cuts long cells instead of wrapping them."""
    return [{"stage": o.ref.stage, "state": o.state, "built in s": f"{o.seconds:.1f}", "metric": metric,
             "value": f"{o.metrics[metric]:.4g}" if metric else "", "fingerprint": o.ref.fingerprint[:12]}
            for o in outcomes for metric in (sorted(o.metrics, key=_result_first) or [""])]


def _result_first(metric: str) -> tuple[bool, str]:
    return (not metric.startswith("test_top1"), metric)


def _publish_summary(store: ArtifactStore, outcomes: list[StageOutcome], class_names: tuple[str, ...]) -> None:
    create_table_artifact(key="distill-summary", table=dashboard_rows(outcomes),
                          description=f"Stages of this run, under {store.root}")
    images = next((o for o in outcomes if o.ref.stage == "synthesize"), None)
    if images is not None:  # the pictures themselves: a browser on the dashboard cannot open a file:// link
        pixels, labels, _ = read_image_store(store.url(images.ref, IMAGES))
        create_markdown_artifact(key="image-grid", markdown=class_grid_markdown(pixels, labels, class_names),
                                 description=f"the distilled images, one row per class ({images.path})")


def class_grid_markdown(pixels: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]) -> str:
    """A table of one row per class: its name, then its images (N, C, H, W) uint8 side by side (the first
    ``storage.image_store.GRID_PER_CLASS`` of them), each tile scaled to at least 56 px so a dashboard
    shows them at a readable size."""
    scale = max(1, -(-56 // pixels.shape[-1]))
    rows = [{"class": name, "images": f"![{name}]({png_data_uri(grid_png(members, per_row=len(members), scale=scale))})"}
            for c, name in enumerate(class_names) if len(members := pixels[labels == c])]
    return render_table(rows)


@flow(name="distill", validate_parameters=True)
def distill(config: DistilleryConfig | PresetRef, until: Stage = STAGES[-1], replicates: int = 1,
            share_teacher: bool = True) -> list[StageOutcome]:
    """Run the stages up to ``until`` (see :func:`flows.pipeline.run_pipeline`); each is reused
    when its artifact already exists. ``config`` may name a preset (deployments do). With
    ``replicates`` > 1 the whole pipeline runs that many times, replicate r from run seed
    ``seed + r`` (:func:`flows.pipeline.replicate_config`), and the outcomes of all come back,
    each with its replicate; on a Dask runner every replicate is built up to its students first,
    then all their students are trained side by side."""
    started = time.perf_counter()
    config = config_of(config)
    store, runtime = ArtifactStore(config.runtime.artifact_root), config.runtime
    watch = DataWatch(data_identity(config, until))
    runs = replicate_runs(config, replicates, share_teacher=share_teacher)
    outcomes: list[StageOutcome] = []
    with unit_runner(runtime) as runner:
        called: dict[ArtifactRef, StageOutcome] = {}  # each artifact once, though replicates share some

        def caller(replicate: int) -> Callable[[Task, StageRequest], StageOutcome]:
            def call(stage: Task, request: StageRequest) -> StageOutcome:
                if request.ref() not in called:
                    stop_if_signalled()
                    watch.note(request, built=not store.is_complete(request.ref()))
                    if runner is not None:
                        map_units(runner, [request], runtime)
                    called[request.ref()] = _outcome(store, run_stage(stage, request, extra_tags=device_tags(runtime),
                                                                      runtime=runtime))
                return called[request.ref()].model_copy(update={"replicate": replicate})
            return call

        if runner is not None and len(runs) > 1 and until == "evaluate":
            for r, run in enumerate(runs):
                run_pipeline(run, last_before_evaluate(run), caller(r), identity=watch.identity)
            map_units(runner, [request for run in runs for request in planned_requests(run, watch.identity, "evaluate")],
                      runtime)
        for r, run in enumerate(runs):
            outcomes += run_pipeline(run, until, caller(r), identity=watch.identity)
    watch.check(config, until, store)
    _publish_summary(store, outcomes, load_split(config.data, "test").class_names)
    if until == "evaluate" and replicates == 1:
        _record_history(config, watch, outcomes, store=store, seconds=time.perf_counter() - started)
    return outcomes


def planned_requests(config: DistilleryConfig, identity: dict, stage: str) -> list[StageRequest]:
    """The requests of ``stage`` a run of ``config`` makes, its earlier stages already built."""
    planned: list[StageRequest] = []

    def plan(_: Task, request: StageRequest) -> SimpleNamespace:
        planned.append(request)
        return SimpleNamespace(ref=request.ref())

    run_pipeline(config, stage, plan, identity=identity)
    return [request for request in planned if request.stage == stage]


def _record_history(config: DistilleryConfig, watch: DataWatch, outcomes: list[StageOutcome], *, store: ArtifactStore,
                    seconds: float) -> None:
    """Append this run to its history, publish it, and fail the run on a regression (after both)."""
    key = history.history_key(config, deployment.name)
    rows = history.read_history(store, key)
    previous = history.previous_of_kind(rows, config.data.name)
    row = history.history_row(config, watch.identity, outcomes, previous=previous, seconds=seconds,
                              rebuilt=[ref.stage for ref in watch.built])
    history.publish(key, history.append_row(store, key, row))
    if why := history.regression(row, previous, config.evaluate.alert_drop):
        raise history.RegressionAlert(why, outcomes)
