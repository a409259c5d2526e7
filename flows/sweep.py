"""The `sweep` flow: the distill flow over grids of settings, one results table.

Each grid point is a full config; each runs as a `distill` subflow, so every upstream artifact
shared between points (teacher, statistics, images, labels) is built once and reused, and a
rerun is all `Cached`. Several grids can be given (their points are concatenated): a report
mixes soft-label points with hard-label and full-data baselines. The results go to the
dashboard (table artifact ``sweep-results`` and a markdown artifact ``sweep-report``) and to
files under ``<artifact root>/sweep/<fingerprint>/``, with one line per run in ``runs.jsonl``.
On a Dask runner the stages before the students run in this process, then the students of every
point and replicate are trained side by side on the workers, all mapped at once
(:func:`students_side_by_side`), so no worker waits at the end of each point.

    distillery sweep --grid synthesis.mode=lpld,sre2l --grid prune.ratio=0,0.9,0.975
"""

from __future__ import annotations

import hashlib
import json
import time

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.config import (DistilleryConfig, PresetRef, check_grid_replicates, config_of, grid_points, split_point,
                          with_overrides)
from flows.distill import StageOutcome, distill, planned_requests
from flows.pipeline import data_identity, last_before_evaluate, replicate_runs
from flows.scale_out import map_units, shared_cluster, unit_runner
from storage.artifacts import ArtifactRef, ArtifactStore, StageRequest, canonical_json
from tasks.report.rows import Row, result_row, to_csv
from flows.tables import render_table

RESULTS_CSV, RESULTS_MD, RUNS = "results.csv", "results.md", "runs.jsonl"
SHOWN = ("mode", "ipc", "labels", "real_compression", "prune_rule", "label_format", "replicates", "val_top1",
         "val_top1_std", "test_top1", "test_top1_std", "label_bytes", "within_class_similarity", "evaluate_state")

Grid = dict[str, list[str]]


def sweep_ref(base: DistilleryConfig, grids: list[Grid], replicates: int = 1, share_teacher: bool = True) -> ArtifactRef:
    """Where a sweep's result files live: named by its base config (runtime aside), grids and replicates."""
    identity = canonical_json({"base": base.model_dump(mode="json", exclude={"runtime"}), "grids": grids,
                               **({"replicates": replicates, "share_teacher": share_teacher} if replicates > 1 else {})})
    return ArtifactRef(stage="sweep", fingerprint=hashlib.sha256(identity.encode()).hexdigest()[:32])


def points_of(grids: list[Grid]) -> list[dict[str, str]]:
    return [point for grid in grids for point in grid_points(grid)]


def _row(point: dict[str, str], config: DistilleryConfig, outcomes: list[StageOutcome], *, shared_teacher: bool) -> Row:
    store = ArtifactStore(config.runtime.artifact_root)
    replicates: dict[int, dict[str, StageOutcome]] = {}
    for outcome in outcomes:  # per replicate, the last evaluate is the configured one
        replicates.setdefault(outcome.replicate, {})[outcome.ref.stage] = outcome
    first = replicates[0]
    return result_row(
        point, config, [{stage: store.read_manifest(o.ref) for stage, o in run.items()} for _, run in sorted(replicates.items())],
        evaluate_state=first["evaluate"].state, shared_teacher=shared_teacher,
        images_fingerprint=first["synthesize"].ref.fingerprint if "synthesize" in first else "",
    )


@flow(name="sweep", validate_parameters=True)
def sweep(base: DistilleryConfig | PresetRef, grids: list[Grid], replicates: int = 1, share_teacher: bool = True) -> list[Row]:
    """Run ``base`` with every point of every grid applied, each point ``replicates`` times (the whole
    pipeline, the teacher shared or not; a grid's own ``replicates: [N]`` overrides it for that grid's
    points); return (and publish) one row per point. ``base`` may name a preset (deployments do)."""
    base = config_of(base)
    started = time.perf_counter()
    rows, computed = [], set()
    with shared_cluster(base.runtime) as runtime:  # a dask sweep starts its workers once
        for grid in grids:
            check_grid_replicates(grid)
        points = points_of(grids)
        planned = [split_point(point, replicates) for point in points]
        configs = [(with_overrides(base.model_copy(update={"runtime": runtime}), settings), reps) for settings, reps in planned]
        if runtime.task_runner == "dask":
            computed |= students_side_by_side(configs, share_teacher=share_teacher)
        for point, (config, reps) in zip(points, configs):
            outcomes = distill(config=config, until="evaluate", replicates=reps, share_teacher=share_teacher)
            computed |= {o.ref for o in outcomes if o.state != "Cached"}
            rows.append(_row(point, config, outcomes, shared_teacher=share_teacher and reps > 1))
    store, ref = ArtifactStore(base.runtime.artifact_root), sweep_ref(base, grids, replicates, share_teacher)
    table = render_table(rows, SHOWN)
    store.write_bytes(ref, RESULTS_CSV, to_csv(rows).encode())
    store.write_bytes(ref, RESULTS_MD, table.encode())
    run = {"seconds": round(time.perf_counter() - started, 1), "points": len(rows), "stages_computed": len(computed),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    previous = store.read_bytes(ref, RUNS).decode() if store.exists(ref, RUNS) else ""
    store.write_bytes(ref, RUNS, (previous + json.dumps(run) + "\n").encode())
    create_table_artifact(key="sweep-results", table=rows, description=f"{len(rows)} grid points; {store.path(ref)}")
    create_markdown_artifact(key="sweep-report", markdown=f"# Sweep\n\n{table}", description="test top-1 per grid point")
    return rows


def students_side_by_side(configs: list[tuple[DistilleryConfig, int]], *, share_teacher: bool) -> set[ArtifactRef]:
    """On a Dask runner (``configs``: each point's config and its replicates): every point whose
    students are missing is built up to them in this process, then the students of all points and
    replicates are mapped at once, the full-data references (the longest units) first, so no worker
    idles at the end of each point; the points' distill runs then only assemble them. Returns the artifacts built on the way to the students.

    Only the students go to the workers: a worker loads the teacher, the data and the statistics
    again for every unit, which a student's long training pays for best. On the fashion_mnist preset
    here (2 cores) an lpld image set took 50 s on 2 one-thread workers against 28 s in one process,
    its labels 23 s against 6.5 s; on one small CPU even the students are faster in one process
    (docs/benchmarks.md), so Dask is for more machines or GPUs."""
    store, missing, built = ArtifactStore(configs[0][0].runtime.artifact_root), {}, set()
    for config, replicates in configs:
        try:
            requests = _student_requests(config, replicates, share_teacher)
        except FileNotFoundError:  # planning reads a measured normalisation not built yet
            requests = []
        if not requests or not all(store.is_complete(request.ref()) for request in requests):
            in_process = config.model_copy(update={"runtime": config.runtime.model_copy(update={"task_runner": "sequential"})})
            outcomes = distill(config=in_process, until=last_before_evaluate(config), replicates=replicates,
                               share_teacher=share_teacher)
            built |= {o.ref for o in outcomes if o.state != "Cached"}
            missing.update((request.ref(), request)
                           for request in requests or _student_requests(config, replicates, share_teacher))
    if missing:
        longest_first = sorted(missing.values(), key=lambda request: request.evaluate.train_set != "full")
        runtime = configs[0][0].runtime
        with unit_runner(runtime) as runner:
            map_units(runner, longest_first, runtime)
    return built


def _student_requests(config: DistilleryConfig, replicates: int, share_teacher: bool) -> list[StageRequest]:
    identity = data_identity(config, "evaluate")
    return [request for run in replicate_runs(config, replicates, share_teacher=share_teacher)
            for request in planned_requests(run, identity, "evaluate")]


def sweep_runs(base: DistilleryConfig, grids: list[Grid], replicates: int = 1,
               share_teacher: bool = True) -> list[dict[str, object]]:
    """Every finished run of this sweep, oldest first (wall seconds, stages computed)."""
    store, ref = ArtifactStore(base.runtime.artifact_root), sweep_ref(base, grids, replicates, share_teacher)
    if not store.exists(ref, RUNS):
        return []
    return [json.loads(line) for line in store.read_bytes(ref, RUNS).decode().splitlines() if line.strip()]
