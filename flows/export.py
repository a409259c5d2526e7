"""`distillery export`: run (or reuse) the pipeline to evaluate, then write the distilled set to a folder.

Every stage is cached by fingerprint, so after a `distillery run` of the same config this only
reads artifacts and writes the folder (:mod:`tasks.export` says what goes in it).

    distillery export --preset ci_tiny --to distilled
"""

from __future__ import annotations

from pathlib import Path

from flows.config import DistilleryConfig
from flows.distill import StageOutcome, distill
from flows.preflight import check_export
from storage.artifacts import ArtifactStore
from tasks.export import write_export


def export(config: DistilleryConfig, dest: Path, *, command: str) -> tuple[list[StageOutcome], Path]:
    """The pipeline through evaluate (cached where built), then the export folder at ``dest``."""
    check_export(config, dest)
    outcomes = distill(config=config, until="evaluate")
    refs = {o.ref.stage: o.ref for o in outcomes}  # the last evaluate is the configured one
    written = write_export(store=ArtifactStore(config.runtime.artifact_root), refs=refs,
                           config=config.model_dump(mode="json"), command=command, dest=dest)
    return outcomes, written
