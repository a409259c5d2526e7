"""Terminal progress: the CLI's --progress / --quiet choice, and the bar a stage draws.

The bar is driven by the same StageProgress calls that move the Prefect progress artifact, so
one test of the terminal side covers every stage.
"""

from __future__ import annotations

import argparse

import pytest

from flows.cli import _terminal_output, build_parser


@pytest.mark.parametrize("argv, tty, mode, console", [
    (["run"], True, "bar", "WARNING"),
    (["run"], False, "log", None),
    (["run", "--progress", "bar"], False, "bar", "WARNING"),
    (["run", "--progress", "log"], True, "log", None),
    (["run", "--quiet"], True, "off", "WARNING"),
    (["sweep", "--grid", "synthesis.ipc=1,2", "--quiet", "--progress", "bar"], True, "off", "WARNING"),
])
def test_progress_mode_follows_the_flags_and_the_terminal(monkeypatch, argv, tty, mode, console):
    monkeypatch.setattr("sys.stderr.isatty", lambda: tty)
    env = _terminal_output(build_parser().parse_args(argv))
    assert env["DISTILLERY_PROGRESS"] == mode
    assert env.get("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL") == console


def test_commands_without_progress_flags_keep_log_lines():
    assert _terminal_output(argparse.Namespace(command="verify"))["DISTILLERY_PROGRESS"] == "log"


def test_a_stage_draws_a_bar_that_ends_full(monkeypatch, capsys):
    from tasks.progress import StageProgress

    monkeypatch.setenv("DISTILLERY_PROGRESS", "bar")
    progress = StageProgress("relabel", 3)
    for done in (1, 2, 3):
        progress(done, f"chunk {done - 1}")
    err = capsys.readouterr().err
    assert "relabel" in err and "3/3" in err and "chunk 2" in err
    assert progress.bar.progress.finished


def test_without_bar_mode_no_bar_is_drawn(monkeypatch, capsys):
    from tasks.progress import StageProgress

    monkeypatch.setenv("DISTILLERY_PROGRESS", "log")
    progress = StageProgress("relabel", 2)
    progress(2, "chunk 1")
    assert progress.bar is None and "2/2" not in capsys.readouterr().err
