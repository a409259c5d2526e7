"""SIGTERM and SIGINT stop real `distillery` processes cleanly (flows/shutdown.py).

Each test starts the CLI (``python -m flows.cli``, the ci_tiny preset) in its own session,
waits for a progress line of the stage it targets, and signals the process: SIGTERM (what
`kill`, `timeout` and schedulers send) or SIGINT (`kill -INT`). Then: exit 130 / 143, no traceback, one line naming the stage
and the command that resumes, no process of the run's tree left (the temporary Prefect server
and Dask workers included), the flow run Cancelled, and the rerun's files the same bytes as an
uninterrupted run's (the session's build of ci_tiny, which equals a CLI run's byte for byte).

Two tests run the CLI as a user does, with a temporary Prefect server of its own (a module-wide
PREFECT_HOME, so its database is made once): the server is part of what must stop. The others,
and every rerun, use the session's server (``PREFECT_API_URL``), which saves a server start and
stop per command.

    nice -n 19 .venv/bin/python -m pytest tests/test_shutdown.py
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import needs_fashion_mnist
from tests.file_trees import tree
from tests.processes import command_line, is_alive

pytestmark = [needs_fashion_mnist, pytest.mark.slow]
PROJECT_ROOT = Path(__file__).resolve().parent.parent
STOP_LINE = re.compile(r"^distillery: stopped by (SIGINT|SIGTERM) (.*); finished work is kept; resume with: (.*)$", re.M)


class Victim:
    """A `distillery` command in its own session; its output collected line by line, and every
    process ever seen under it remembered (the server and workers start and end as it runs)."""

    started: list[Victim] = []  # every one of this test's, ended by the autouse fixture below

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        Victim.started.append(self)
        self.proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *argv], cwd=PROJECT_ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.seen: dict[int, psutil.Process] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def remember_tree(self) -> None:
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def wait_for(self, pattern: str, timeout: float = 300) -> None:
        """Until a line matches ``pattern``, noting the process tree every 50 ms."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.output, re.M):
            assert self.proc.poll() is None, f"ended before {pattern!r}:\n{self.output[-3000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r} in {timeout} s:\n{self.output[-3000:]}"
            self.remember_tree()
            time.sleep(0.05)
        self.remember_tree()

    def signal(self, signum: int) -> None:
        self.remember_tree()
        os.kill(self.proc.pid, signum)

    def finish(self, timeout: float = 60) -> tuple[int, float]:
        """Wait for the exit; its code and the seconds it took. SIGKILL the group if it hangs."""
        started = time.monotonic()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(f"no exit {timeout} s after the signal:\n{self.output[-3000:]}") from None
        self.reader.join(timeout=10)
        return code, time.monotonic() - started


@pytest.fixture(autouse=True)
def _no_victim_outlives_its_test():
    """SIGKILL whatever a test's commands left running (a failed assertion stops a test before its
    command has exited): their process groups and every process seen under them, the temporary
    Prefect server (in a session of its own) included."""
    yield
    while Victim.started:
        victim = Victim.started.pop()
        victim.remember_tree()
        for process in victim.seen.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                if process.is_running():  # compares start times: never a newcomer with a reused pid
                    process.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.proc.pid, signal.SIGKILL)  # the command itself leads its group
        victim.proc.wait()


def left_over(victim: Victim) -> list[str]:
    """Processes of ``victim``'s tree still alive: any it was seen to start, or any in its session."""
    time.sleep(0.5)  # an exiting child may still be reaped by init
    alive = {p.pid: p for p in victim.seen.values() if is_alive(p)}
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == victim.proc.pid and is_alive(process):
                alive[process.pid] = process
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return [f"{p.pid} {command_line(p)[:120]}" for p in alive.values() if is_alive(p)]


def assert_stopped_cleanly(victim: Victim, signum: int, stage: str) -> None:
    """Exit code, one stop line naming ``stage``, no traceback, no process left."""
    code, seconds = victim.finish()
    out = victim.output
    assert code == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], f"exit {code}:\n{out[-3000:]}"
    stops = STOP_LINE.findall(out)
    assert len(stops) == 1, f"want one stop line:\n{out[-3000:]}"
    name, where, resume = stops[0]
    assert name == signal.Signals(signum).name and stage in where, stops[0]
    assert resume.startswith("distillery ") and "--preset ci_tiny" in resume, resume
    assert "Traceback" not in out, out[-3000:]
    assert not left_over(victim), f"left running: {left_over(victim)}"
    assert seconds < 40, f"stopping took {seconds:.0f} s"


def flow_run_states(home: Path) -> list[tuple[str, str]]:
    """(flow name, state name) of every flow run in the temporary server's database, newest first."""
    with sqlite3.connect(home / "prefect.db") as db:
        return db.execute("SELECT flow.name, flow_run.state_name FROM flow_run JOIN flow ON flow.id = flow_run.flow_id "
                          "ORDER BY flow_run.created DESC").fetchall()


def flow_run_states_on(api: str) -> list[tuple[str, str]]:
    """(flow name, state name) of the newest flow runs on the server at ``api``, newest first."""
    runs = httpx.post(f"{api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_DESC", "limit": 10}).json()
    flows = {flow["id"]: flow["name"] for flow in httpx.post(f"{api}/flows/filter", json={}).json()}
    return [(flows[run["flow_id"]], run["state_name"]) for run in runs]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="module")
def env(home) -> dict[str, str]:
    """A user's environment: the CLI starts a temporary Prefect server of its own."""
    environment = {**os.environ, "PREFECT_HOME": str(home), "DISTILLERY_PROGRESS": "log"}
    environment.pop("PREFECT_API_URL", None)
    return environment


@pytest.fixture
def shared(env, prefect_server) -> dict[str, str]:
    """The CLI on the session's Prefect server."""
    return {**env, "PREFECT_API_URL": prefect_server}


@pytest.fixture
def clean(tmp_path_factory, tiny_artifacts) -> dict[str, bytes]:
    """The files of an uninterrupted ci_tiny run."""
    root = tmp_path_factory.mktemp("clean")
    tiny_artifacts.copy_into(root)
    return tree(root)


def rerun_matches(argv: list[str], root: Path, env: dict[str, str], clean: dict[str, bytes]) -> str:
    """Rerun ``argv`` to the end; its files must be ``clean``'s. Its output."""
    again = Victim(argv, env)
    assert again.finish(timeout=600)[0] == 0, again.output[-3000:]
    files = tree(root)
    assert files.keys() == clean.keys(), sorted(files.keys() ^ clean.keys())[:5]
    assert not [name for name in clean if files[name] != clean[name]]
    return again.output


def test_sigterm_in_synthesis_cancels_the_run_stops_its_server_and_resumes_to_the_same_bytes(
        tmp_path, env, home, shared, clean):
    argv = ["run", "--preset", "ci_tiny", "--artifact-root", str(tmp_path)]
    victim = Victim(argv, env)
    victim.wait_for(r"synthesize 1/\d+")
    victim.signal(signal.SIGTERM)
    assert_stopped_cleanly(victim, signal.SIGTERM, "synthesize")
    assert flow_run_states(home)[0] == ("distill", "Cancelled")
    rerun_matches(argv, tmp_path, shared, clean)


def test_sigint_in_evaluate_stops_the_run_and_resumes_to_the_same_bytes(tmp_path, shared, prefect_server, clean):
    argv = ["run", "--preset", "ci_tiny", "--artifact-root", str(tmp_path)]
    victim = Victim(argv, shared)
    victim.wait_for(r"evaluate 1/\d+")
    victim.signal(signal.SIGINT)
    assert_stopped_cleanly(victim, signal.SIGINT, "evaluate")
    assert flow_run_states_on(prefect_server)[0] == ("distill", "Cancelled")
    rerun_matches(argv, tmp_path, shared, clean)


def test_ctrl_c_in_a_terminal_signals_the_whole_group_and_still_stops_in_seconds(tmp_path, env, home):
    """A terminal's Ctrl-C reaches every process of the foreground group, the temporary server
    too; it must not die before the run has marked itself Cancelled and sent its last calls."""
    victim = Victim(["run", "--preset", "ci_tiny", "--artifact-root", str(tmp_path)], env)
    victim.wait_for(r"synthesize 1/\d+")
    victim.remember_tree()
    os.killpg(victim.proc.pid, signal.SIGINT)
    assert_stopped_cleanly(victim, signal.SIGINT, "synthesize")
    assert flow_run_states(home)[0] == ("distill", "Cancelled")


def test_a_second_signal_ends_the_shutdown_at_once_without_orphans(tmp_path, shared):
    victim = Victim(["run", "--preset", "ci_tiny", "--artifact-root", str(tmp_path)], shared)
    victim.wait_for(r"teacher 1/\d+")
    victim.signal(signal.SIGINT)
    time.sleep(0.3)
    victim.signal(signal.SIGTERM)
    assert_stopped_cleanly(victim, signal.SIGINT, "teacher")


def test_sigterm_stops_a_sweep_and_its_subflow(tmp_path, shared, prefect_server):
    """Sent right after stats ended: Prefect once lost such a signal between two stages and the
    sweep ran to the end (exit 0); the flows now check for it before each stage."""
    victim = Victim(["sweep", "--preset", "ci_tiny", "--artifact-root", str(tmp_path),
                     "--grid", "prune.ratio=0,0.5"], shared)
    victim.wait_for(r"stats 1/\d+")
    victim.signal(signal.SIGTERM)
    assert_stopped_cleanly(victim, signal.SIGTERM, "stats")
    assert flow_run_states_on(prefect_server)[:2] == [("distill", "Cancelled"), ("sweep", "Cancelled")]


def test_sigterm_stops_a_dask_run_with_its_local_cluster_and_resumes_to_the_same_bytes(tmp_path, shared, clean):
    argv = ["run", "--preset", "ci_tiny", "--artifact-root", str(tmp_path), "--task-runner", "dask"]
    victim = Victim(argv, shared)
    victim.wait_for(r"synthesize: mapping \d+ units")
    victim.wait_for(r"synthesize-unit-\d+' - Finished in state Completed", timeout=120)  # one unit done on a worker
    victim.signal(signal.SIGTERM)
    assert_stopped_cleanly(victim, signal.SIGTERM, "synthesize")
    # Resumed without Dask: the units its workers stored must be taken up as they are. (A Dask run
    # gives the same bytes as a sequential one, tests/test_scale_out.py; here it would add a cluster start.)
    output = rerun_matches(argv[:-2], tmp_path, shared, clean)
    to_do = int(re.search(r"synthesize: 10 units, (\d+) to do", output).group(1))
    assert to_do < 10, output[-3000:]  # what the workers stored is kept


def test_kill_9_of_the_command_in_evaluate_leaves_no_prefect_server(tmp_path, env, tiny_artifacts):
    """SIGKILL cannot be caught: the watchdog started beside the temporary server ends it."""
    tiny_artifacts.copy_into(tmp_path)
    for built in (tmp_path / "evaluate").iterdir():  # everything before evaluate is reused
        shutil.rmtree(built)
    victim = Victim(["run", "--preset", "ci_tiny", "--artifact-root", str(tmp_path)], env)
    victim.wait_for(r"evaluate 1/\d+")
    [server] = [p for p in victim.seen.values() if "prefect.server.api.server" in command_line(p)]
    assert server.is_running()
    victim.signal(signal.SIGKILL)
    assert victim.finish()[0] == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while is_alive(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_alive(server), f"server {server.pid} outlived kill -9"
    assert not left_over(victim), f"left running: {left_over(victim)}"
