"""The pipeline's wiring, once: which stages a config needs, in order, and what feeds each.

Both entry points use it: the `distill` Prefect flow (each stage a cached task run) and
:mod:`flows.without_prefect` (the same stage entries called as plain functions: benchmarks, fault
injection). ``call(stage_entry, request)`` runs one stage and returns an object with ``.ref``.
The identity of each data split (:mod:`tasks.data.identity`) is taken once, before any stage,
and given to the stages that read that split, so it names them: changed files are rebuilt.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, TypeVar

from flows.config import DistilleryConfig
from storage.artifacts import ArtifactRef, ArtifactStore, StageRequest
from tasks.data import has_validation, needs_measured_normalization
from tasks.data.identity import DigestMemo, SplitIdentity, split_identity
from tasks.pretrained import pretrained_input
from tasks.stages import STAGES
from tasks.stages.evaluate import EvaluateRequest, evaluate_task
from tasks.stages.normalization import NormalizationRequest, normalization_task, with_measured_normalization
from tasks.stages.prune import PruneRequest, prune_task
from tasks.stages.relabel import relabel_request, relabel_task
from tasks.stages.stats import StatsRequest, stats_task
from tasks.stages.synthesize import synthesize_request, synthesize_task
from tasks.stages.teacher import teacher_request, teacher_task

Stage = Literal["teacher", "stats", "synthesize", "relabel", "prune", "evaluate"]
O = TypeVar("O")


def replicate_config(config: DistilleryConfig, replicate: int, *, share_teacher: bool) -> DistilleryConfig:
    """Replicate ``replicate`` of ``config``: every draw after the teacher from run seed ``seed +
    replicate`` (synthesis initialisation, label stream, random real subset, students); the teacher
    (and its class statistics) from the base seed when shared, else from the replicate's too."""
    runtime = config.runtime.model_copy(update={"seed": config.runtime.seed + replicate})
    teacher = config.teacher
    if share_teacher and teacher.seed is None:
        teacher = teacher.model_copy(update={"seed": config.runtime.seed})
    return config.model_copy(update={"runtime": runtime, "teacher": teacher})


def replicate_runs(config: DistilleryConfig, replicates: int, *, share_teacher: bool) -> list[DistilleryConfig]:
    """The configs of ``replicates`` runs of ``config`` (one: ``config`` itself)."""
    if replicates == 1:
        return [config]
    return [replicate_config(config, r, share_teacher=share_teacher) for r in range(replicates)]


def last_before_evaluate(config: DistilleryConfig) -> str:
    """The last stage a run through evaluate builds before it: what the students read."""
    if config.evaluate.train_set == "full":
        return "teacher"
    if config.evaluate.labels == "hard":
        return "synthesize"
    return "prune" if config.prune.ratio > 0 else "relabel"


def splits_read(config: DistilleryConfig, until: str) -> tuple[str, ...]:
    """The data splits a run up to ``until`` reads: train always, validation where the data has one
    (the teacher is scored on it), test when students are evaluated."""
    held_out = ("val",) if has_validation(pretrained_input(config.data, config.teacher.weights)) else ()
    return ("train", *held_out, *(("test",) if until == "evaluate" else ()))


def data_identity(config: DistilleryConfig, until: str) -> dict[str, SplitIdentity]:
    """The identity of every split the run reads (one memo of file digests for all)."""
    data, memo = pretrained_input(config.data, config.teacher.weights), DigestMemo()
    return {split: split_identity(data, split, memo=memo) for split in splits_read(config, until)}


def run_pipeline(config: DistilleryConfig, until: str, call: Callable[[Any, StageRequest], O], *,
                 identity: dict[str, SplitIdentity]) -> list[O]:
    """Call every stage up to ``until`` in order; return what ``call`` returned for each.

    The class statistics are computed only where they are used: when asked for, or for lpld.
    The prune stage runs only for a ratio above 0 (ratio 0 keeps the relabel store as it is);
    with ``evaluate.also_unpruned`` students are trained on the unpruned store as well, first;
    a hard-label evaluation needs neither relabel nor prune, and the full-data reference
    (``evaluate.train_set=full``) needs no images either. Where neither the config nor the data
    set gives the normalisation, a ``normalization`` artifact measures it first, and every
    stage's ``data`` carries the figures (so they are in every fingerprint).
    """
    seed = config.runtime.seed
    teacher_seed = seed if config.teacher.seed is None else config.teacher.seed  # the teacher's and its statistics'
    teacher_config = config.teacher.model_copy(update={"seed": None})  # the seed is the request's: one name per teacher
    train = {"train": identity["train"]}
    scored = {split: identity[split] for split in ("train", "val") if split in identity}  # the teacher's reads
    wanted = STAGES[: STAGES.index(until) + 1]
    if until == "evaluate" and config.evaluate.train_set == "full":
        wanted = ("teacher", "evaluate")  # the full-data reference trains on real images and labels only

    outcomes = []
    data = pretrained_input(config.data, config.teacher.weights)
    if needs_measured_normalization(data):  # no random draw: seed 0, shared by every run seed
        outcomes.append(call(normalization_task, NormalizationRequest(data=data, seed=0, data_identity=train)))
        data = with_measured_normalization(data, ArtifactStore(config.runtime.artifact_root), outcomes[-1].ref)
    config = config.model_copy(update={"data": data})
    teacher = call(teacher_task, teacher_request(data=config.data, teacher=teacher_config, seed=teacher_seed,
                                                 data_identity=scored))
    outcomes.append(teacher)
    inputs = {"teacher": teacher.ref}
    matches_class_statistics = config.synthesis.mode == "lpld" or config.synthesis.sre2l_statistics == "pooled"
    if until == "stats" or ("synthesize" in wanted and matches_class_statistics):
        request = StatsRequest(data=config.data, stats=config.stats, seed=teacher_seed, inputs={"teacher": teacher.ref},
                               data_identity=train)
        outcomes.append(call(stats_task, request))
        inputs["stats"] = outcomes[-1].ref
    if "synthesize" in wanted:
        request = synthesize_request(data=config.data, synthesis=config.synthesis, seed=seed, inputs=inputs,
                                     data_identity=train)
        outcomes.append(call(synthesize_task, request))
    soft_labels = not (until == "evaluate" and config.evaluate.labels == "hard")
    if "relabel" in wanted and soft_labels:
        request = relabel_request(
            data=config.data, relabel=config.relabel, prune_ratio=config.prune.ratio, prune_rule=config.prune.rule,
            seed=seed, teacher=teacher.ref, images=outcomes[-1].ref,
        )
        outcomes.append(call(relabel_task, request))
    if "prune" in wanted and soft_labels and config.prune.ratio > 0:
        request = PruneRequest(prune=config.prune, seed=seed, inputs={"labels": outcomes[-1].ref})
        outcomes.append(call(prune_task, request))
    if "evaluate" in wanted:
        for request in _evaluate_requests(config, teacher.ref, outcomes, identity):
            outcomes.append(call(evaluate_task, request))

    return outcomes


def _evaluate_requests(config: DistilleryConfig, teacher: ArtifactRef, built: list[Any],
                       identity: dict[str, SplitIdentity]) -> list[EvaluateRequest]:
    """The evaluations after the stages ``built``: the configured label store's, preceded by the
    unpruned store's with ``evaluate.also_unpruned``; hard-label and full-data runs have one."""
    evaluate = config.evaluate.for_stream(epochs=config.relabel.epochs, batch_size=config.relabel.batch_size)
    images = {"images": o.ref for o in built if o.ref.stage == "synthesize"}
    label_sets = [built[-1].ref] if config.evaluate.labels == "soft" else [None]
    if config.evaluate.also_unpruned and built[-1].ref.stage == "prune" and config.relabel.generate == "all":
        label_sets.insert(0, built[-2].ref)  # the unpruned store first; the configured one ends the run
    read = [s for s in ("train", "val", "test") if s in identity and (s != "train" or config.evaluate.train_set == "full")]
    return [
        EvaluateRequest(data=config.data, evaluate=evaluate, seed=config.runtime.seed,
                        inputs={"teacher": teacher, **images, **({"labels": labels} if labels is not None else {})},
                        data_identity={split: identity[split] for split in read})
        for labels in label_sets
    ]
