"""Progress of long stages: one call per finished unit logs a line and moves a Prefect
progress artifact, so the terminal and the dashboard say the same thing.

Plain compute functions take an optional ``on_progress(done, message)`` callback; the
stage's @task entry passes a :class:`StageProgress`. Outside a Prefect run it only logs.
"""

from __future__ import annotations

import logging

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger

fallback_logger = logging.getLogger("distillery")


class StageProgress:
    def __init__(self, stage: str, total: int) -> None:
        self.stage, self.total = stage, max(total, 1)
        self.in_prefect = TaskRunContext.get() is not None
        self.logger = get_run_logger() if self.in_prefect else fallback_logger
        self.artifact_id = (
            create_progress_artifact(progress=0.0, description=f"{stage}: units done, in percent")
            if self.in_prefect
            else None
        )

    def __call__(self, done: int, message: str) -> None:
        self.logger.info("%s %d/%d %s", self.stage, done, self.total, message)
        if self.artifact_id is not None:
            update_progress_artifact(self.artifact_id, progress=100.0 * done / self.total)

    def info(self, message: str, *args: object) -> None:
        self.logger.info(message, *args)
