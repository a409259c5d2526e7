"""The `distill` flow: the pipeline for one config, composed from stage entries.

No computation here: each stage is called through ``run_stage`` (cache by fingerprint,
recompute when the artifact is gone), only ArtifactRefs pass between stages, and the flow
publishes a summary table to the Prefect dashboard.

    distillery run --until stats          # the CLI wraps this flow
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.states import State
from pydantic import BaseModel

from flows.config import DistilleryConfig
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.stage_cache import run_stage
from tasks.evaluate import EvaluateRequest, evaluate_task
from tasks.prune import PruneRequest, prune_task
from tasks.relabel import relabel_request, relabel_task
from tasks.stats import StatsRequest, stats_task
from tasks.synthesize import SynthesizeRequest, synthesize_task
from tasks.teacher import teacher_request, teacher_task

STAGES = ("teacher", "stats", "synthesize", "relabel", "prune", "evaluate")
Stage = Literal["teacher", "stats", "synthesize", "relabel", "prune", "evaluate"]


class StageOutcome(BaseModel):
    """What the flow reports per stage: the artifact, its Prefect state and its manifest figures."""

    ref: ArtifactRef
    state: str
    path: str
    seconds: float
    metrics: dict[str, float]


def _outcome(store: ArtifactStore, state: State) -> StageOutcome:
    ref: ArtifactRef = state.result()
    manifest = store.read_manifest(ref)
    return StageOutcome(
        ref=ref, state=state.name, path=store.path(ref), seconds=manifest["seconds"], metrics=manifest["metrics"]
    )


def _publish_summary(store: ArtifactStore, outcomes: list[StageOutcome]) -> None:
    rows = [
        {"stage": o.ref.stage, "state": o.state, "fingerprint": o.ref.fingerprint, "seconds": o.seconds,
         **{name: round(value, 4) for name, value in o.metrics.items()}}
        for o in outcomes
    ]
    create_table_artifact(key="distill-summary", table=rows, description=f"Stages of this run, under {store.root}")


@flow(name="distill", validate_parameters=True)
def distill(config: DistilleryConfig, until: Stage = STAGES[-1]) -> list[StageOutcome]:
    """Run the stages up to ``until``; each is reused when its artifact already exists.

    The class statistics are computed only where they are used: when asked for, or for lpld.
    The prune stage runs only for a ratio above 0 (ratio 0 keeps the relabel store as it is);
    a hard-label evaluation needs neither relabel nor prune.
    """
    store, runtime, seed = ArtifactStore(config.runtime.artifact_root), config.runtime, config.runtime.seed
    wanted = STAGES[: STAGES.index(until) + 1]

    teacher = _outcome(
        store,
        run_stage(teacher_task, teacher_request(data=config.data, teacher=config.teacher, seed=seed), runtime=runtime),
    )
    outcomes = [teacher]
    inputs = {"teacher": teacher.ref}
    if until == "stats" or ("synthesize" in wanted and config.synthesis.mode == "lpld"):
        request = StatsRequest(data=config.data, stats=config.stats, seed=seed, inputs={"teacher": teacher.ref})
        outcomes.append(_outcome(store, run_stage(stats_task, request, runtime=runtime)))
        inputs["stats"] = outcomes[-1].ref
    if "synthesize" in wanted:
        request = SynthesizeRequest(data=config.data, synthesis=config.synthesis, seed=seed, inputs=inputs)
        outcomes.append(_outcome(store, run_stage(synthesize_task, request, runtime=runtime)))
    soft_labels = not (until == "evaluate" and config.evaluate.labels == "hard")
    if "relabel" in wanted and soft_labels:
        request = relabel_request(
            data=config.data, relabel=config.relabel, prune_ratio=config.prune.ratio, prune_rule=config.prune.rule,
            seed=seed, teacher=teacher.ref, images=outcomes[-1].ref,
        )
        outcomes.append(_outcome(store, run_stage(relabel_task, request, runtime=runtime)))
    if "prune" in wanted and soft_labels and config.prune.ratio > 0:
        request = PruneRequest(prune=config.prune, seed=seed, inputs={"labels": outcomes[-1].ref})
        outcomes.append(_outcome(store, run_stage(prune_task, request, runtime=runtime)))
    if "evaluate" in wanted:
        images = next(o.ref for o in outcomes if o.ref.stage == "synthesize")
        labels = {"labels": outcomes[-1].ref} if config.evaluate.labels == "soft" else {}
        request = EvaluateRequest(data=config.data, evaluate=config.evaluate, seed=seed,
                                  inputs={"images": images, **labels})
        outcomes.append(_outcome(store, run_stage(evaluate_task, request, runtime=runtime)))

    _publish_summary(store, outcomes)
    return outcomes
