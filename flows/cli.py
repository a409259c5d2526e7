"""The `distillery` command.

    distillery run [--config FILE | --preset NAME] [--set section.field=VALUE ...]
                   [--until STAGE] [--artifact-root URI] [--device auto|cpu|cuda] [--debug]
    distillery sweep [config options] --grid section.field=V1,V2 ...  # the pipeline over a grid
    distillery config [--config FILE | --preset NAME] [--set ...]   # print the resolved config
    distillery presets                                               # list preset names
    distillery bench-labels [--artifact-root PATH] [--reads N]      # soft-label read rates

Exit codes: 0 done, 1 a stage failed (message printed), 2 bad config, arguments or data.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from typing import Sequence

# Set before Prefect is imported: a brand-new PREFECT_HOME needs ~30 s to start the temporary
# server (the default timeout is 20 s), and this machine has no network for analytics.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
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
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distillery", description="Dataset distillation as cached Prefect stages.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the pipeline through Prefect")
    _common_config_args(run)
    run.add_argument("--until", metavar="STAGE", help="last stage to run (default: the last one built)")
    sweep = commands.add_parser("sweep", help="run the pipeline over a grid of settings; one results table")
    _common_config_args(sweep)
    sweep.add_argument("--grid", action="append", default=[], metavar="SECTION.FIELD=V1,V2",
                       help="values to sweep for one field; repeatable (the grid is their product)")
    _common_config_args(commands.add_parser("config", help="print the resolved config as YAML"))
    commands.add_parser("presets", help="list the presets")
    bench = commands.add_parser("bench-labels", help="random-order read rate of every soft-label store, vs memory")
    bench.add_argument("--artifact-root", metavar="PATH", default="artifacts", help="local artifact root to scan")
    bench.add_argument("--passes", type=int, default=3, help="rounds per store; the best is kept")
    bench.add_argument("--reads", type=int, default=20000, help="random step reads per round")
    return parser


def _print_summary(outcomes: list, wall_seconds: float) -> None:  # list[StageOutcome]
    print(f"\n{'stage':<10} {'state':<10} {'built in s':>10}  metrics")
    for o in outcomes:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in o.metrics.items())
        print(f"{o.ref.stage:<10} {o.state:<10} {o.seconds:>10.1f}  {metrics}")
        print(f"{'':<10} {o.path}")
    print(f"wall time {wall_seconds:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)

    from flows.config import DEFAULT_PRESET, ConfigError, dump_yaml, preset_names, resolve_config

    if args.command == "presets":
        print("\n".join(preset_names()))
        return 0
    if args.command == "bench-labels":
        from flows.bench import label_store_reads, print_table

        print(print_table(label_store_reads(args.artifact_root, passes=max(args.passes, 1), reads=max(args.reads, 1))))
        return 0
    try:
        config = resolve_config(
            config_file=args.config, preset=args.preset or (None if args.config else DEFAULT_PRESET),
            overrides=args.overrides,
            artifact_root=args.artifact_root, device=args.device,
        )
    except ConfigError as err:
        print(f"distillery: {err}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(dump_yaml(config), end="")
        return 0

    from flows.distill import STAGES, distill
    from tasks.data import DataError, load_split

    until = getattr(args, "until", None) or STAGES[-1]
    if until not in STAGES:
        print(f"distillery: --until {args.until!r} is not a stage; choose one of: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    if args.command == "sweep":
        from flows.config import grid_points, parse_grid, with_overrides

        try:
            grid = parse_grid(args.grid)
            for point in grid_points(grid):
                with_overrides(config, point)  # every point valid before anything runs
        except ConfigError as err:
            print(f"distillery: {err}", file=sys.stderr)
            return 2
    try:
        load_split(config.data, "test")  # fail before the Prefect server starts, not minutes in
    except DataError as err:
        print(f"distillery: data: {err}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        if args.command == "sweep":
            from flows.sweep import sweep, to_markdown

            rows = sweep(base=config, grid=grid)
            print("\n" + to_markdown(rows) + f"wall time {time.perf_counter() - started:.1f} s")
            return 0
        outcomes = distill(config=config, until=until)
    except Exception as err:  # noqa: BLE001 - the CLI turns any failure into one message
        if args.debug:
            traceback.print_exc()
        print(f"distillery: {type(err).__name__}: {err}", file=sys.stderr)
        if not args.debug:
            print("distillery: rerun with --debug for the full traceback", file=sys.stderr)
        return 1
    _print_summary(outcomes, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
