"""The pipeline without Prefect: the same stage entries called as plain functions.

Same wiring (:func:`flows.pipeline.run_pipeline`), same artifacts, same resume rule (a stage
with a manifest is skipped, an unfinished one resumes) and the same per-artifact locks; no
server, no task runs, no dashboard. It is the yardstick for Prefect's overhead and the driver
of the kill and concurrency tests.

    python -m flows.without_prefect --preset ci_tiny --artifact-root /tmp/a [--set k=v ...] [--until STAGE]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

from flows.config import DistilleryConfig, resolve_config
from flows.pipeline import STAGES, data_identity, run_pipeline
from storage.artifacts import ArtifactRef, StageRequest


@dataclass(frozen=True)
class PlainOutcome:
    ref: ArtifactRef
    seconds: float  # wall time of the call (0 when the artifact already existed)


def run_plain(config: DistilleryConfig, until: str = STAGES[-1]) -> list[PlainOutcome]:
    def call(stage: Any, request: StageRequest) -> PlainOutcome:
        started = time.perf_counter()
        return PlainOutcome(stage.fn(request, config.runtime), time.perf_counter() - started)

    return run_pipeline(config, until, call, identity=data_identity(config, until))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.without_prefect", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="ci_tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--artifact-root", required=True)
    parser.add_argument("--until", default=STAGES[-1], choices=STAGES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(message)s", stream=sys.stdout,
                        force=True)  # importing Prefect has configured logging already
    config = resolve_config(preset=args.preset, overrides=args.overrides, artifact_root=args.artifact_root)
    for outcome in run_plain(config, args.until):
        print(f"{outcome.ref} {outcome.seconds:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
