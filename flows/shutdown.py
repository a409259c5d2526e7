"""One way to stop: SIGINT (Ctrl-C), SIGTERM and SIGHUP end a long-running command cleanly.

    distillery run --preset ci_tiny     # then Ctrl-C, `kill <pid>`, or close the terminal: exit 130, 143, 129

The first signal ends the running stage where it is: every finished unit and chunk is already
saved whole (temporary name, then rename), so a rerun resumes from it. The command unwinds
with :class:`Stopped` (a local Dask cluster closes on the way out), then :func:`run_stoppable`

1. marks the Prefect run, its parent and its subflows Cancelled (Prefect has marked them Crashed);
2. sends Prefect the logs and events still queued, then stops the temporary server it started;
3. ends every process still under this one (Dask workers, data loaders): SIGTERM, then SIGKILL;
4. prints one line: the signal, the stage and unit reached, the command that resumes;

and the command exits 130 (SIGINT) or 143 (SIGTERM), with no traceback. A second signal during
that ends it at once: SIGKILL to every process under this one, the same line, the same code.

While a flow runs, Prefect owns SIGTERM: it raises ``TerminationSignal``, records the run
Crashed, and once the flow has unwound sends the signal again, which then reaches the handler
here. Prefect code between two stages can catch that exception on its way (a sweep signalled
right after a stage ends would then run to its end), so the bridge Prefect installs is wrapped
to note the signal too (:func:`notice_prefect_bridge`, called once a command's refusals have
passed: importing Prefect takes a second or two, and a refusal must not wait for it), and the flows
check the note before each stage (:func:`stop_if_signalled`): a caught signal still stops the run
at the next stage.
A terminal's Ctrl-C signals the whole foreground process group; the temporary Prefect server
is started in a session of its own (:mod:`flows.temporary_server`) so that it is still up
while the run marks itself Cancelled, and is stopped in step 2 like after any other signal.
``distillery serve`` is not wrapped: Prefect's runner stops it (and pauses its schedules).
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Callable, Iterator, NoReturn
from uuid import UUID

from flows.temporary_server import stop_temporary_server

# SIGHUP (the terminal closed) too: the temporary server is outside the terminal's group, so it
# would not get the hang-up itself and must be stopped here.
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
_noticed: list[int] = []  # the signals Prefect's SIGTERM bridge received in this process
GRACE_SECONDS = 5.0  # how long a child may take to end on SIGTERM before SIGKILL


class Stopped(KeyboardInterrupt):
    """Raised in the main thread by the first SIGINT or SIGTERM; unwinds the running command.

    A KeyboardInterrupt, so Prefect records the run as interrupted and libraries that clean up
    on Ctrl-C (asyncio, Dask) do so for SIGTERM too.
    """

    def __init__(self, signum: int, flow_run_id: UUID | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.flow_run_id = signum, flow_run_id


@dataclass
class Shutdown:
    """What one command needs to stop cleanly: how to resume it, and the signal once it came."""

    resume: str  # the command line that picks the work up again
    exit_process: bool = False  # end the process once stopped (the CLI), or return the code (tests)
    signum: int | None = None
    flow_run_id: UUID | None = None  # the innermost Prefect flow run when the signal came

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: the first signal unwinds the command, a second ends it at once."""
        if self.signum is not None:
            self.stop_at_once()
        self.signum, self.flow_run_id = signum, _current_flow_run_id()
        raise Stopped(signum)

    def stop_at_once(self) -> None:
        end_children(grace=0.0)
        self.say()
        os._exit(EXIT_CODES[self.signum or signal.SIGINT])

    def finish(self) -> int:
        """Steps 1-4 of the module docstring after the command unwound; the exit code."""
        if self.flow_run_id is not None:
            mark_cancelled(self.flow_run_id, f"stopped by {signal.Signals(self.signum).name}")
        stop_temporary_server()
        end_children(grace=GRACE_SECONDS)
        self.say()
        if self.exit_process:
            _exit_now(EXIT_CODES[self.signum])
        return EXIT_CODES[self.signum]

    def say(self) -> None:
        try:
            print(f"distillery: stopped by {signal.Signals(self.signum).name} {where_stopped()}; {self.resume}",
                  file=sys.stderr, flush=True)
        except OSError:
            pass  # after SIGHUP the terminal may be gone


def where_stopped() -> str:
    """The stage and unit the latest progress of this process names, as words."""
    from tasks.progress import latest_progress
    from tasks.stages import SAVED_BY_UNIT

    reached = latest_progress()
    if reached is None:
        return "before any stage reported progress"
    if reached.done >= reached.total:
        return f"after {reached.stage} finished its {reached.total} units"
    if reached.stage in SAVED_BY_UNIT:
        return f"in {reached.stage} at unit {reached.done + 1} of {reached.total} ({reached.done} done and kept)"
    return f"in {reached.stage} at unit {reached.done + 1} of {reached.total} (this stage restarts on resume)"


def run_stoppable(command: Callable[[], int], *, resume: str, exit_process: bool = False) -> int:
    """Run ``command`` with SIGINT and SIGTERM handled as the module docstring says; its exit code.

    The handlers stay installed after a stop: the process is exiting, and a second signal must
    still end it at once. With ``exit_process`` a stopped command ends the process right after
    its stop line (see :func:`_exit_now`) instead of returning the code.
    """
    shutdown = Shutdown(resume, exit_process)
    with _handlers(shutdown.handle) as restore:
        try:
            code = command()
        except KeyboardInterrupt as stopped:  # Stopped, or a Ctrl-C that came before the handlers
            shutdown.signum = shutdown.signum or getattr(stopped, "signum", signal.SIGINT)
            shutdown.flow_run_id = shutdown.flow_run_id or getattr(stopped, "flow_run_id", None)
            return shutdown.finish()
        except BaseException as exc:
            from prefect.exceptions import TerminationSignal

            if not isinstance(exc, TerminationSignal):
                raise
            shutdown.signum = shutdown.signum or exc.signal
            return shutdown.finish()
        if _noticed:  # a signal that never reached a stage boundary: the work finished, the exit says so
            shutdown.signum = _noticed[0]
            return shutdown.finish()
        restore()
        return code


def _exit_now(code: int) -> NoReturn:
    """End a stopped process with ``code`` without Python's finalization.

    Finalization puts the default handlers back before the process is gone (and takes a while
    with torch loaded): a second signal in that window killed the command by the signal (exit
    -15 in CI) instead of the code promised. The stop's work is done; nothing is left to finalize.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass
    os._exit(code)


def stop_if_signalled() -> None:
    """Raise :class:`Stopped` when a signal came that Prefect's handling lost; flows call it
    before each stage. The flow run is noted for marking Cancelled."""
    if _noticed:
        raise Stopped(_noticed[0], _current_flow_run_id())


def notice_prefect_bridge() -> None:
    """Wrap the handler Prefect's flow engines install for SIGTERM so this module hears of the
    signal even when the ``TerminationSignal`` it raises is caught on its way out. Call it before a
    flow runs under :func:`run_stoppable`."""
    from prefect.utilities import engine

    bridge = engine._prefect_sigterm_handler
    if getattr(bridge, "noticed_by_distillery", False):
        return

    def noticing(sig_num: int, *args: object) -> None:
        _noticed.append(sig_num)
        bridge(sig_num, *args)

    noticing.noticed_by_distillery = True  # type: ignore[attr-defined]
    engine._prefect_sigterm_handler = noticing


@contextmanager
def _handlers(handler: Callable[[int, FrameType | None], None]) -> Iterator[Callable[[], None]]:
    previous = {signum: signal.signal(signum, handler) for signum in EXIT_CODES}

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    yield restore


def _current_flow_run_id() -> UUID | None:
    """The flow run active in this thread when the signal came, if Prefect is loaded and one is.

    SIGINT arrives inside the run, so its context names it. SIGTERM arrives here only after
    Prefect's own handler ended the flow: Prefect re-sends the signal while it handles the
    ``TerminationSignal``, whose traceback holds the flow engine that ran.
    """
    context, engines = sys.modules.get("prefect.context"), sys.modules.get("prefect.flow_engine")
    run_context = context.FlowRunContext.get() if context is not None else None
    if run_context is not None and run_context.flow_run is not None:
        return run_context.flow_run.id
    handled = sys.exc_info()[1]
    trace = handled.__traceback__ if handled is not None and engines is not None else None
    while trace is not None:
        engine = trace.tb_frame.f_locals.get("self")
        if isinstance(engine, engines.FlowRunEngine) and engine.flow_run is not None:
            return engine.flow_run.id
        trace = trace.tb_next
    return None


def mark_cancelled(flow_run_id: UUID, message: str) -> None:
    """Mark the run tree of ``flow_run_id`` (its outermost parent and every subflow) Cancelled
    where it is not Completed; leave it as Prefect left it (Crashed) when the API is gone."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.states import Cancelled

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
            while run.parent_task_run_id is not None:
                run = client.read_flow_run(client.read_task_run(run.parent_task_run_id).flow_run_id)
            tree, frontier = [run], [run.id]
            while frontier:
                children = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))
                tree += children
                frontier = [child.id for child in children]
            for member in tree:
                if member.state is None or not member.state.is_completed():
                    client.set_flow_run_state(member.id, Cancelled(message=message), force=True)
    except Exception:  # noqa: BLE001 - the server may be gone (Ctrl-C reaches it too); Crashed stands
        return


def end_children(*, grace: float) -> None:
    """End every process under this one: SIGTERM, SIGKILL after ``grace`` seconds (at once for 0)."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.kill() if grace <= 0 else child.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(children, timeout=grace or 1.0)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue
