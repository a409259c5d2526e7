"""The `distillery` command.

    distillery run [--config FILE | --preset NAME] [--set section.field=VALUE ...]
                   [--until STAGE] [--artifact-root URI] [--device auto|cpu|cuda] [--debug]
                   [--task-runner sequential|dask] [--dask-address tcp://HOST:8786]
    distillery sweep [config options] --grid section.field=V1,V2 ...  # the pipeline over a grid
    distillery export [config options] --to DIR                      # the distilled set as PNGs, store, card
    distillery report [SPEC] [--out DIR] [--artifact-root URI]       # a report spec's sweep -> DIR/results.md
    distillery config [--config FILE | --preset NAME] [--set ...]   # print the resolved config
    distillery presets                                               # list preset names
    distillery bench-labels [--artifact-root PATH] [--reads N]      # soft-label read rates
    distillery bench [--preset bench] [--artifact-root DIR] [--passes N]  # ratios: where time goes
    distillery verify [--artifact-root URI]                          # re-check every artifact's files
    distillery serve                                                # serve deploy/deployments.yaml from one process

Exit codes: 0 done, 1 a stage failed or verify found damage (message printed), 2 bad config,
arguments, data, artifact root or Prefect API, 130 / 143 / 129 stopped by SIGINT (Ctrl-C) / SIGTERM /
SIGHUP (run, export, sweep, report, bench: finished work is kept, the last line says how to resume).
The parser and the dispatch are here; each command's handler is in :mod:`flows.commands`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Sequence

# Set before Prefect is imported: a brand-new PREFECT_HOME needs ~30 s to start the temporary
# server (the default timeout is 20 s), and this machine has no network for analytics.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "DO_NOT_TRACK": "1",  # no client telemetry notice either
}


def _common_config_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE", help="YAML config file")
    source.add_argument("--preset", metavar="NAME",
                        help="a preset from deploy/presets (default fashion_mnist; see `distillery presets`)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one field; repeatable")
    parser.add_argument("--artifact-root", metavar="URI", help="artifact root (default $DISTILLERY_HOME or ./artifacts)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="compute device")
    parser.add_argument("--task-runner", choices=["sequential", "dask"],
                        help="dask: map synthesis shards, relabel chunks and evaluation seeds onto Dask workers")
    parser.add_argument("--dask-address", metavar="TCP_URL",
                        help="scheduler of an existing Dask cluster (implies --task-runner dask)")
    _output_args(parser)


def _output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", choices=["auto", "bar", "log"], default="auto",
                        help="terminal progress: a bar per stage (INFO logs then go to the dashboard only) or log "
                             "lines; auto: bars when stderr is a terminal")
    parser.add_argument("--quiet", action="store_true", help="warnings, errors and the final summary only")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")


def _terminal_output(args: argparse.Namespace) -> dict[str, str]:
    """The environment that sets the terminal's progress form and Prefect's console log level."""
    mode = getattr(args, "progress", "log")
    if getattr(args, "quiet", False):
        mode = "off"
    elif mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "log"
    env = {"DISTILLERY_PROGRESS": mode}
    if mode != "log":  # bars replace the INFO lines on the terminal; the dashboard keeps every log
        env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"
    return env


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distillery", description="Dataset distillation as cached Prefect stages.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the pipeline through Prefect")
    _common_config_args(run)
    run.add_argument("--until", metavar="STAGE", help="last stage to run (default: evaluate, the last stage)")
    sweep = commands.add_parser("sweep", help="run the pipeline over a grid of settings; one results table")
    _common_config_args(sweep)
    sweep.add_argument("--grid", action="append", default=[], metavar="SECTION.FIELD=V1,V2",
                       help="values to sweep for one field; repeatable (the grid is their product)")
    export = commands.add_parser("export", help="run (or reuse) the pipeline, then write the distilled set to a "
                                 "new folder: PNGs per class, the soft-label store, a card")
    _common_config_args(export)
    export.add_argument("--to", metavar="DIR", required=True, help="the folder to create (never overwritten)")
    report = commands.add_parser("report", help="run a report spec's sweep; write results.md, CSV, plot, grids")
    report.add_argument("spec", nargs="?", default="fashion_mnist",
                        help="a spec in deploy/reports or a YAML file (default fashion_mnist)")
    report.add_argument("--out", metavar="DIR", default="docs", help="folder for the report (default docs)")
    report.add_argument("--artifact-root", metavar="URI", help="artifact root (default $DISTILLERY_HOME or ./artifacts)")
    report.add_argument("--device", choices=["auto", "cpu", "cuda"], help="compute device")
    _output_args(report)
    _common_config_args(commands.add_parser("config", help="print the resolved config as YAML"))
    commands.add_parser("presets", help="list the presets")
    bench = commands.add_parser("bench-labels", help="random-order read rate of every soft-label store, vs memory")
    bench.add_argument("--artifact-root", metavar="PATH", default="artifacts", help="local artifact root to scan")
    bench.add_argument("--passes", type=int, default=3, help="rounds per store; the best is kept")
    bench.add_argument("--reads", type=int, default=20000, help="random step reads per round")
    bench_all = commands.add_parser("bench", help="where time goes: ratios measured side by side (a Prefect flow)")
    bench_all.add_argument("--preset", default="bench", help="the config measured (default bench)")
    bench_all.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    bench_all.add_argument("--artifact-root", metavar="DIR", help="an empty folder (default: a new temporary one)")
    bench_all.add_argument("--passes", type=int, default=3, help="rounds per rate; the best is kept")
    _output_args(bench_all)
    verify = commands.add_parser("verify", help="re-check every artifact against its manifest; list damage")
    verify.add_argument("--artifact-root", metavar="URI", help="artifact root (default $DISTILLERY_HOME or ./artifacts)")
    commands.add_parser("serve", help="serve the deployments of deploy/deployments.yaml from this process")
    return parser


LONG_RUNNING = ("run", "export", "sweep", "report", "bench")  # SIGINT / SIGTERM stop these cleanly (flows/shutdown.py)


def _after_stop(args: argparse.Namespace, line: str) -> str:
    """What a stopped command's last line tells the user to run next."""
    if args.command == "bench":
        return f"bench times cold runs, so run it again on an empty --artifact-root: {line}"
    return f"finished work is kept; resume with: {line}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Before anything imports Prefect: it reads its settings from the environment once.
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.update(_terminal_output(args))
    line = shlex.join(["distillery", *(sys.argv[1:] if argv is None else argv)])
    if args.command not in LONG_RUNNING:
        return _command(args, line)
    from flows.shutdown import run_stoppable

    return run_stoppable(lambda: _command(args, line), resume=_after_stop(args, line), exit_process=True)


def _command(args: argparse.Namespace, line: str) -> int:
    from flows.commands import HANDLERS

    return HANDLERS[args.command](args, line)


if __name__ == "__main__":
    sys.exit(main())
