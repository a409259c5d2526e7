"""`distillery serve`: the deployments of deploy/deployments.yaml, served from this one process.

deploy/deployments.yaml is the only definition (data, read like the presets): this module builds
each entry with Prefect's ``flow.to_deployment`` (name, parameters, schedules, concurrency limit,
tags, description) and serves them with a Prefect ``Runner``; `prefect deploy` reads
deploy/prefect.yaml, written from the same list, for a process work pool. Served runs are child processes of this one, started in
the repository root, where the pull step puts a worker's runs too. Use one of the two per
server: serving is refused while the same deployments are on a work pool.

SIGINT (Ctrl-C) and SIGTERM stop it the same way: runs in flight are cancelled, the schedules
paused, and the command exits 130 or 143 with one line saying how to serve again.

    distillery serve                          # every deployment in deploy/deployments.yaml
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from flows.preflight import api_answers
from flows.strict_yaml import load_yaml
from flows.shutdown import EXIT_CODES

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ServeError(ValueError):
    """The deployment file cannot be served; the message names the entry and the fix."""


class ScheduleEntry(BaseModel):
    """One item of a deployment's ``schedules:`` list (the keys ``prefect deploy`` reads)."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = None
    interval: float | None = Field(None, gt=0, description="seconds")
    rrule: str | None = None
    timezone: str | None = None
    active: bool = True
    slug: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    day_or: bool = True

    @model_validator(mode="after")
    def _one_kind(self) -> "ScheduleEntry":
        if sum(kind is not None for kind in (self.cron, self.interval, self.rrule)) != 1:
            raise ValueError("give exactly one of cron, interval or rrule")
        return self


class DeploymentEntry(BaseModel):
    """One item of ``deployments:``; work_pool and pull steps are for `prefect deploy` only."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1)
    entrypoint: str = Field(pattern=r"^[\w./-]+\.py:\w+$", description="path/from/root.py:flow_function")
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[ScheduleEntry] = Field(default_factory=list)
    concurrency_limit: PositiveInt | None = None
    description: str | None = None
    tags: list[str] = Field(default_factory=list)


DEPLOYMENTS_FILE = "deployments.yaml"  # in the deploy package, beside presets/


def deployment_list() -> list[dict[str, Any]]:
    """The ``deployments:`` list of deploy/deployments.yaml, as written; ServeError when it cannot be read."""
    try:
        tree = load_yaml((resources.files("deploy") / DEPLOYMENTS_FILE).read_text())
    except (OSError, yaml.YAMLError) as err:  # DuplicateKeyError is one
        raise ServeError(f"deploy/{DEPLOYMENTS_FILE} cannot be read ({err}); restore it from the repository") from None
    if not isinstance(tree, dict) or not isinstance(tree.get("deployments"), list):
        raise ServeError(f"deploy/{DEPLOYMENTS_FILE} must hold a `deployments:` list")
    return tree["deployments"]


def deployment_entries(entries: list[dict[str, Any]] | None = None) -> list[DeploymentEntry]:
    """The validated entries of deploy/deployments.yaml (or ``entries``); ServeError naming the first bad one."""
    deployments = []
    entries = deployment_list() if entries is None else entries
    for number, entry in enumerate(entries, 1):
        try:
            deployments.append(DeploymentEntry.model_validate(entry))
        except ValidationError as err:
            where = entry.get("name", f"#{number}")
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in err.errors())
            raise ServeError(f"deploy/{DEPLOYMENTS_FILE}: deployment {where}: {problems}") from None
    return deployments


def load_flow(entrypoint: str) -> Any:  # prefect.Flow
    """Import ``flows/distill.py:distill`` as ``flows.distill.distill`` (one copy of each module,
    unlike loading the file by path) and check it is a flow."""
    from prefect import Flow

    file, _, name = entrypoint.rpartition(":")
    if not (PROJECT_ROOT / file).is_file():
        raise ServeError(f"entrypoint {entrypoint}: {file} is not a file under {PROJECT_ROOT}")
    module = importlib.import_module(".".join(Path(file).with_suffix("").parts))
    found = getattr(module, name, None)
    if not isinstance(found, Flow):
        raise ServeError(f"entrypoint {entrypoint}: {name} is not a Prefect flow in {file}")
    return found


def _schedule(entry: ScheduleEntry) -> Any:  # prefect.schedules.Schedule
    from prefect.schedules import Cron, Interval, RRule

    common = {"timezone": entry.timezone, "active": entry.active, "parameters": entry.parameters, "slug": entry.slug}
    if entry.cron is not None:
        return Cron(entry.cron, day_or=entry.day_or, **common)
    if entry.interval is not None:
        return Interval(entry.interval, **common)
    return RRule(entry.rrule, **common)


def runner_deployments(entries: list[DeploymentEntry]) -> list[Any]:  # list[RunnerDeployment]
    """One RunnerDeployment per entry. Call from PROJECT_ROOT: Prefect records the entrypoint
    relative to the working directory."""
    return [
        load_flow(entry.entrypoint).to_deployment(
            name=entry.name, parameters=entry.parameters, schedules=[_schedule(s) for s in entry.schedules],
            concurrency_limit=entry.concurrency_limit, description=entry.description, tags=entry.tags,
        )
        for entry in entries
    ]


def running_api_url(timeout: float = 5.0) -> str:
    """The Prefect API this process talks to (environment or profile), checked to answer. Serving
    needs a real server: a temporary one would end with this process, and no other terminal
    could reach it to start runs."""
    from prefect.settings import get_current_settings

    url = (get_current_settings().api.url or "").rstrip("/")
    if not url:
        raise ServeError("distillery serve needs a running Prefect server: start one with "
                         "`prefect server start`, then export PREFECT_API_URL=http://127.0.0.1:4200/api")
    if why := api_answers(url, timeout=timeout):
        raise ServeError(f"the Prefect API at {url} does not answer ({why}); start the server "
                         "(`prefect server start`) or point PREFECT_API_URL at a running one")
    return url


def dashboard_note(api_url: str) -> str:
    """Where the dashboard of the server at ``api_url`` is, and what it needs to show anything: its UI
    asks PREFECT_UI_API_URL for data, which defaults to port 4200, so a server on another port
    serves a blank page unless it was started with that variable pointing at its own API."""
    ui = api_url.removesuffix("/api")
    note = f"dashboard: {ui}"
    if urlparse(api_url).port not in (None, 4200):
        note += (f" (a server on a port other than 4200 shows a blank dashboard unless it was started with "
                 f"PREFECT_UI_API_URL={api_url})")
    return note


def refuse_pooled(entries: list[DeploymentEntry]) -> None:
    """ServeError when `prefect deploy` already gave one of these deployments to a work pool.

    Serving the same name updates that deployment rather than replacing it: it keeps its pool
    and loses its code path, so every served run would crash (FileNotFoundError '.../None').
    """
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    entrypoints = {entry.name: entry.entrypoint for entry in entries}
    with get_client(sync_client=True) as client:
        named = DeploymentFilter(name=DeploymentFilterName(any_=list(entrypoints)))
        found = client.read_deployments(deployment_filter=named)
        pooled = [f"{client.read_flow(d.flow_id).name}/{d.name}" for d in found
                  if d.work_pool_name and entrypoints.get(d.name) == d.entrypoint]
    if pooled:
        raise ServeError(f"{', '.join(pooled)} {'is' if len(pooled) == 1 else 'are'} deployed to a work pool "
                         "(`prefect deploy`) on this server; serve on another server, or delete "
                         f"{'it' if len(pooled) == 1 else 'them'} first: `prefect deployment delete {pooled[0]}`")


def serve(entries: list[DeploymentEntry]) -> int:
    """Serve ``entries`` until SIGINT or SIGTERM; then cancel runs in flight, pause the
    schedules and return 130 or 143."""
    from prefect.runner import Runner

    stopped_by: list[int] = []

    class _Runner(Runner):
        """Prefect's runner, remembering that SIGTERM (which it handles itself) stopped it."""

        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
            stopped_by.append(signal.SIGTERM)
            super().handle_sigterm(*args, **kwargs)  # exits at once (code 0) when the runner is still starting

    def before_the_runner(signum: int, frame: object) -> None:  # SIGTERM until the runner installs its own
        stopped_by.append(signum)
        raise KeyboardInterrupt

    # A process started with `&` from a script inherits SIGINT ignored, and Python keeps it
    # so: `kill -INT` and Ctrl-C would do nothing. Serving must stop when asked.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, before_the_runner)
    os.chdir(PROJECT_ROOT)
    runner, served = _Runner(pause_on_shutdown=True), []
    try:
        served = [runner.add_deployment(deployment) for deployment in runner_deployments(entries)]
        print(f"distillery: serving {', '.join(e.name for e in entries)}; Ctrl-C or SIGTERM stops; "
              f"{dashboard_note(running_api_url())}", flush=True)
        asyncio.run(runner.start())
    except KeyboardInterrupt:
        stopped_by.append(signal.SIGINT)
    except SystemExit:
        if not stopped_by:
            raise
    if not stopped_by:
        return 0
    _pause(served)  # the runner pauses them on a clean stop, not when a signal cuts its start-up short
    name = signal.Signals(stopped_by[0]).name
    print(f"distillery: serve stopped by {name}; runs in flight were cancelled and the schedules paused; "
          "`distillery serve` serves them again", flush=True)
    return EXIT_CODES[stopped_by[0]]


def _pause(deployment_ids: list[Any]) -> None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        for deployment_id in deployment_ids:
            client.pause_deployment(deployment_id)
