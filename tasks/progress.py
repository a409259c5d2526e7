"""Progress of long stages: one call per finished unit logs a line, moves a Prefect progress
artifact and, in a terminal, a progress bar, so the terminal and the dashboard say the same thing.

Plain compute functions take an optional ``on_progress(done, message)`` callback; the
stage's @task entry passes a :class:`StageProgress`. Outside a Prefect run it only logs (and
draws the bar). ``DISTILLERY_PROGRESS`` picks the terminal form, set by the CLI's
``--progress`` / ``--quiet``: ``bar`` (a rich bar per stage on stderr), anything else none.
The latest figures of this process are kept (:func:`latest_progress`), so a stopped run can
say where it was.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger

PROGRESS_ENV = "DISTILLERY_PROGRESS"
fallback_logger = logging.getLogger("distillery")


@dataclass(frozen=True)
class Reached:
    """How far a stage of this process has come: ``done`` of its ``total`` units."""

    stage: str
    done: int
    total: int


_latest: Reached | None = None


def record_progress(stage: str, done: int, total: int) -> None:
    """Remember ``stage`` at ``done``/``total`` units as the latest progress of this process."""
    global _latest
    _latest = Reached(stage, done, total)


def latest_progress() -> Reached | None:
    """The progress last recorded in this process, or None before any stage reported."""
    return _latest


BAR_WIDTH = 20


class TerminalBar:
    """A rich progress bar on stderr for one stage: units done, elapsed, ETA, the latest message."""

    def __init__(self, stage: str, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.fields[stage]:<10}"), BarColumn(bar_width=BAR_WIDTH), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.description}"),
            console=Console(stderr=True), transient=False,
        )
        self.task = self.progress.add_task("", total=total, stage=stage)
        self.columns_before_message = 10 + BAR_WIDTH + 2 * len(str(total)) + 1 + 7 + 3 + 7 + 6  # widths, spaces
        self.progress.start()

    def update(self, done: int, message: str) -> None:
        # The message is cut to what the line leaves, so the counts, elapsed time and ETA stay whole.
        room = max(self.progress.console.width - self.columns_before_message, 8)
        shown = message if len(message) <= room else message[: room - 1] + "…"
        self.progress.update(self.task, completed=done, description=shown)
        if self.progress.finished:
            self.progress.stop()


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
        self.bar = TerminalBar(stage, self.total) if os.environ.get(PROGRESS_ENV) == "bar" else None
        record_progress(stage, 0, self.total)

    def __call__(self, done: int, message: str) -> None:
        record_progress(self.stage, done, self.total)
        self.logger.info("%s %d/%d %s", self.stage, done, self.total, message)
        if self.artifact_id is not None:
            update_progress_artifact(self.artifact_id, progress=100.0 * done / self.total)
        if self.bar is not None:
            self.bar.update(done, message)

    def info(self, message: str, *args: object) -> None:
        self.logger.info(message, *args)
