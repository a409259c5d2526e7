"""A SIGTERM that Prefect's handling loses on its way out still stops the run at the next stage.

Prefect's flow engine turns SIGTERM into a ``TerminationSignal`` exception; code between two
stages can catch it (a sweep once ran to the end after one). flows/shutdown.py wraps that
bridge to note the signal, and the distill flow checks the note before each stage.
"""

from __future__ import annotations

import os
import signal

import pytest
from prefect.exceptions import TerminationSignal
from prefect.utilities import engine

from flows import shutdown


@pytest.fixture
def noticing(monkeypatch):
    monkeypatch.setattr(engine, "_prefect_sigterm_handler", engine._prefect_sigterm_handler)
    monkeypatch.setattr(shutdown, "_noticed", [])
    handlers = {signum: signal.getsignal(signum) for signum in shutdown.EXIT_CODES}
    shutdown.notice_prefect_bridge()
    yield
    for signum, handler in handlers.items():  # run_stoppable leaves its handlers installed
        signal.signal(signum, handler)


def test_a_lost_termination_signal_stops_at_the_next_stage(noticing):
    shutdown.stop_if_signalled()  # nothing came: carries on
    try:
        engine._prefect_sigterm_handler(signal.SIGTERM)  # what Prefect's installed bridge runs
    except TerminationSignal:
        pass  # lost on its way out, as it once was between two stages of a sweep
    with pytest.raises(shutdown.Stopped) as stopped:
        shutdown.stop_if_signalled()
    assert stopped.value.signum == signal.SIGTERM


def test_a_command_that_ends_after_a_lost_signal_exits_143(noticing, monkeypatch, capsys):
    monkeypatch.setattr(shutdown, "stop_temporary_server", lambda: None)
    monkeypatch.setattr(shutdown, "end_children", lambda grace: None)

    def command() -> int:
        try:
            engine._prefect_sigterm_handler(signal.SIGTERM)
        except TerminationSignal:
            pass
        return 0

    assert shutdown.run_stoppable(command, resume="resume with: distillery run") == 143
    assert "distillery: stopped by SIGTERM" in capsys.readouterr().err


def test_the_bridge_is_wrapped_once(noticing):
    wrapped = engine._prefect_sigterm_handler
    shutdown.notice_prefect_bridge()
    assert engine._prefect_sigterm_handler is wrapped


def test_closing_the_terminal_stops_a_command_like_the_other_signals(noticing, monkeypatch, capsys):
    """SIGHUP: the temporary server runs outside the terminal's group, so the run must stop it."""
    monkeypatch.setattr(shutdown, "stop_temporary_server", lambda: None)
    monkeypatch.setattr(shutdown, "end_children", lambda grace: None)

    def command() -> int:
        os.kill(os.getpid(), signal.SIGHUP)
        return 0

    assert shutdown.run_stoppable(command, resume="resume with: distillery run") == 129
    assert "distillery: stopped by SIGHUP" in capsys.readouterr().err


@pytest.mark.parametrize("stage, says", [("synthesize", "at unit 3 of 10 (2 done and kept)"),
                                          ("teacher", "at unit 3 of 10 (this stage restarts on resume)")])
def test_the_stop_line_says_kept_only_for_stages_that_keep_units(monkeypatch, stage, says):
    from tasks import progress

    monkeypatch.setattr(progress, "_latest", progress.Reached(stage, 2, 10))
    assert shutdown.where_stopped() == f"in {stage} {says}"
