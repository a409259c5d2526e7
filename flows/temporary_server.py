"""The temporary Prefect server a command starts when no ``PREFECT_API_URL`` is set: started in a
session of its own with a watchdog beside it, and stopped after the queued logs and events reach it.

A terminal's Ctrl-C signals the whole foreground process group; outside it, the server is still
up while a stopped run marks itself Cancelled (:mod:`flows.shutdown`). The watchdog
(:mod:`flows.server_watch`) ends it should the command be killed without cleaning up.
"""

from __future__ import annotations

import functools
import sys

DRAIN_SECONDS = 5.0  # how long queued logs and events may take to reach the server before it stops


def temporary_server_in_own_session() -> None:
    """Start Prefect's temporary server (when a client starts one) outside this process group,
    so a terminal's Ctrl-C reaches the run and not the server it still has calls to make to, and
    with a watchdog (:mod:`flows.server_watch`) that ends it should this process be killed.
    The CLI calls it once a command has passed its checks: the import costs about 2 s, which a
    refused command should not pay."""
    import subprocess

    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return  # a configured server: none is started
    from prefect.server.api.server import SubprocessASGIServer  # imported by the client's start-up anyway

    from flows.server_watch import start_watch

    start = SubprocessASGIServer._run_uvicorn_command
    if getattr(start, "in_own_session", False):
        return

    def in_own_session(self: SubprocessASGIServer) -> subprocess.Popen:
        popen = subprocess.Popen
        subprocess.Popen = functools.partial(popen, start_new_session=True)  # type: ignore[misc]
        try:
            server = start(self)
        finally:
            subprocess.Popen = popen  # type: ignore[misc]
        start_watch(server.pid)  # ends the server if this process dies without cleaning up (SIGKILL)
        return server

    in_own_session.in_own_session = True  # type: ignore[attr-defined]
    SubprocessASGIServer._run_uvicorn_command = in_own_session  # type: ignore[method-assign]


def stop_temporary_server() -> None:
    """Stop the temporary Prefect server, when this process started one, after sending it the
    logs and events still queued (else they would retry against a closed port at exit)."""
    server_module = sys.modules.get("prefect.server.api.server")
    if server_module is None:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        service.drain_all(timeout=DRAIN_SECONDS)
    server_module.SubprocessASGIServer().stop()  # the one a client without PREFECT_API_URL starts
