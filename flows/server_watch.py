"""A watchdog that ends the temporary Prefect server when the command that started it dies.

A signal the command can catch stops the server itself (:mod:`flows.shutdown`); SIGKILL (or an
out-of-memory kill) cannot be caught, and the server, in a session of its own, would listen for
good. So the command starts this watchdog beside the server: a small process in its own
session (a terminal's Ctrl-C does not reach it) that polls its parent every
:data:`POLL_SECONDS`, and once the parent is gone sends SIGTERM to the server's process group,
then SIGKILL after :data:`GRACE_SECONDS`, and exits. After a normal exit the server is already
stopped and the watchdog just exits.

    python -m flows.server_watch SERVER_PID SERVER_START_TIME   # started by flows.shutdown
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

POLL_SECONDS = 0.2
GRACE_SECONDS = 5.0
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def start_watch(server_pid: int) -> subprocess.Popen:
    """Start the watchdog for the server process ``server_pid``, a child of this process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    started = psutil.Process(server_pid).create_time()
    return subprocess.Popen([sys.executable, "-m", "flows.server_watch", str(server_pid), repr(started)], env=env,
                            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def _same_server(server_pid: int, started: float) -> psutil.Process | None:
    """The server process, or None once it is gone (or its PID names another process now)."""
    try:
        process = psutil.Process(server_pid)
        return process if process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE else None
    except psutil.NoSuchProcess:
        return None


def watch(server_pid: int, started: float) -> None:
    """Wait for the parent to go, then end the server's process group (SIGTERM, then SIGKILL)."""
    parent = os.getppid()
    while os.getppid() == parent:  # re-parented: the command that started us is gone
        time.sleep(POLL_SECONDS)
    if _same_server(server_pid, started) is None:
        return
    for signum, wait in ((signal.SIGTERM, GRACE_SECONDS), (signal.SIGKILL, 1.0)):
        try:
            os.killpg(server_pid, signum)  # the server leads its own session: uvicorn and what it started
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _same_server(server_pid, started) is None:
                return
            time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    for ignored in (signal.SIGINT, signal.SIGHUP):
        signal.signal(ignored, signal.SIG_IGN)
    watch(int(sys.argv[1]), float(sys.argv[2]))
