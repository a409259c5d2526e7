"""Real processes in tests: started in their own session, waited on, stopped with their group
(:func:`spawn`, :func:`wait_for`, :func:`stop_group`), and race-safe questions about them: a
short-lived child can end (and its /proc entry vanish) between being listed and being asked, which
psutil reports as NoSuchProcess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import psutil


def command_line(process: psutil.Process) -> str:
    """``process``'s command line, or "" once it has ended."""
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def is_alive(process: psutil.Process) -> bool:
    """Running and not a zombie; False for one that ends while it is being asked."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spawn(argv: list[str], env: dict[str, str], log: Path, cwd: Path, sigint=signal.SIG_DFL) -> subprocess.Popen:
    """Start ``argv`` in its own session. SIGINT is set explicitly: a pytest started in the
    background would otherwise pass "ignored" on, and Prefect workers then never stop."""
    return subprocess.Popen(argv, env=env, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> tuple[int | None, float]:
    """SIGINT to the process group; SIGKILL what is left after ``timeout``. Returns the exit
    code (None: it had to be killed) and the seconds the SIGINT took."""
    started = time.monotonic()
    code = proc.poll()
    if code is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
    seconds = time.monotonic() - started
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children of the group (flow runs) go too
    except ProcessLookupError:
        pass
    proc.wait()
    return code, seconds


def wait_for(check: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> Any:
    """``check()``'s first truthy answer within ``timeout`` s (its errors count as not yet); AssertionError
    with ``log``'s tail when it never comes or ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            found = check()
        except Exception:  # noqa: BLE001 - not there yet (connection refused, 404)
            found = None
        if found:
            return found
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{tail}")
