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
    distillery serve                                                # serve deploy/deployments.py from one process

Exit codes: 0 done, 1 a stage failed or verify found damage (message printed), 2 bad config,
arguments, data, artifact root or Prefect API, 130 / 143 / 129 stopped by SIGINT (Ctrl-C) / SIGTERM /
SIGHUP (run, export, sweep, report, bench: finished work is kept, the last line says how to resume).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import traceback
from pathlib import Path
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


def _runtime_overrides(args: argparse.Namespace) -> list[str]:
    """The runtime flags as ``--set`` assignments (they win over the config file)."""
    overrides = []
    if getattr(args, "task_runner", None) or getattr(args, "dask_address", None):
        overrides.append(f"runtime.task_runner={args.task_runner or 'dask'}")
    if getattr(args, "dask_address", None):
        overrides.append(f"runtime.dask_address={args.dask_address}")
    return overrides


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
    commands.add_parser("serve", help="serve the deployments of deploy/deployments.py from this process")
    return parser


def _print_summary(outcomes: list, wall_seconds: float) -> None:  # list[StageOutcome]
    from flows.distill import summary_rows
    from tasks.tables import render_table

    print("\n" + render_table(summary_rows(outcomes), style="text"), end="")
    print("artifacts:\n" + "".join(f"  {o.ref.stage:<10} {o.path}\n" for o in outcomes), end="")
    students = [o for o in outcomes if o.ref.stage == "evaluate"]
    if students:
        print("\nstudents (test top-1, mean ± std over seeds):")
        for o in students:
            m = o.metrics
            labels = (f"soft labels {m['label_compression']:.4g}x: {m['label_steps']:.0f} stored steps, "
                      f"{m['labels_store_bytes'] / 1024:,.1f} KiB" if m["label_steps"] else "hard labels")
            print(f"  {labels:<52} {m['test_top1']:.4f} ± {m['test_top1_std']:.4f}")
    print(f"wall time {wall_seconds:.1f} s")


def _resolve(args: argparse.Namespace) -> tuple:  # (DistilleryConfig, list of grids)
    """The config (and for sweep / report, the grids) the command runs; ConfigError if unusable."""
    from flows.config import DEFAULT_PRESET, ConfigError, grid_points, parse_grid, resolve_config, with_overrides

    if args.command == "bench":
        import tempfile

        root = args.artifact_root or tempfile.mkdtemp(prefix="distillery-bench-")
        if Path(root).exists() and any(Path(root).iterdir()):
            raise ConfigError(f"bench root {root} is not empty; give an empty folder (cold runs are measured)")
        return resolve_config(preset=args.preset, overrides=args.overrides, artifact_root=root), []
    if args.command == "report":
        from flows.report import load_spec

        spec = load_spec(args.spec)
        config, grids = spec.base(artifact_root=args.artifact_root, device=args.device), list(spec.grids)
    else:
        config = resolve_config(
            config_file=args.config, preset=args.preset or (None if args.config else DEFAULT_PRESET),
            overrides=[*args.overrides, *_runtime_overrides(args)], artifact_root=args.artifact_root, device=args.device,
        )
        grids = [parse_grid(args.grid)] if args.command == "sweep" else []
    for grid in grids:
        for point in grid_points(grid):
            with_overrides(config, point)  # every point valid before anything runs
    return config, grids


def _verify(root: str) -> int:
    from storage.verify import format_findings, verify_tree

    try:
        findings = verify_tree(root)
    except FileNotFoundError as err:
        print(f"distillery: {err}", file=sys.stderr)
        return 2
    print(format_findings(findings))
    return 1 if any(f.status == "damaged" for f in findings) else 0


def _serve() -> int:
    from flows.serve import ServeError, deployment_entries, refuse_pooled, running_api_url, serve

    try:
        entries = deployment_entries()
        running_api_url()
        refuse_pooled(entries)
    except ServeError as err:
        print(f"distillery: {err}", file=sys.stderr)
        return 2
    return serve(entries)


LONG_RUNNING = ("run", "export", "sweep", "report", "bench")  # SIGINT / SIGTERM stop these cleanly (flows/shutdown.py)


def _after_stop(args: argparse.Namespace, argv: Sequence[str] | None) -> str:
    """What a stopped command's last line tells the user to run next."""
    line = shlex.join(["distillery", *(sys.argv[1:] if argv is None else argv)])
    if args.command == "bench":
        return f"bench times cold runs, so run it again on an empty --artifact-root: {line}"
    return f"finished work is kept; resume with: {line}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in LONG_RUNNING:
        return _command(args, argv)
    from flows.shutdown import run_stoppable

    return run_stoppable(lambda: _command(args, argv), resume=_after_stop(args, argv))


def _command(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.update(_terminal_output(args))

    if args.command == "serve":  # before the config imports below: a refusal comes in a second
        return _serve()
    from flows.config import HOME_ENV, ConfigError, dump_yaml, preset_names
    from flows.preflight import describe_os_error, quiet_tracebacks, refusal

    if args.command == "presets":
        print("\n".join(preset_names()))
        return 0
    if args.command == "bench-labels":
        from tasks.bench.side_by_side import label_store_reads
        from tasks.tables import render_table

        print(render_table(label_store_reads(args.artifact_root, passes=max(args.passes, 1), reads=max(args.reads, 1)),
                           style="text"), end="")
        return 0
    if args.command == "verify":
        return _verify(args.artifact_root or os.environ.get(HOME_ENV) or "artifacts")
    try:
        config, grids = _resolve(args)
    except ConfigError as err:
        print(f"distillery: {err}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(dump_yaml(config), end="")
        return 0

    from flows.distill import STAGES, distill

    until = getattr(args, "until", None) or STAGES[-1]
    if until not in STAGES:
        print(f"distillery: --until {args.until!r} is not a stage; choose one of: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    if why := refusal(config, export_to=Path(args.to) if args.command == "export" else None):
        print(f"distillery: {why}", file=sys.stderr)
        return 2
    from flows.shutdown import temporary_server_in_own_session

    temporary_server_in_own_session()
    if not args.debug:
        quiet_tracebacks()
    started = time.perf_counter()
    try:
        if args.command == "bench":
            from flows.bench import bench
            from tasks.tables import render_table

            rows = bench(config=config, passes=max(args.passes, 1))
            print("\n" + render_table(rows, style="text") + f"wall time {time.perf_counter() - started:.1f} s; "
                  f"table in {Path(config.runtime.artifact_root) / 'bench.md'}")
            return 0
        if args.command in ("sweep", "report"):
            from flows.report import load_spec, report
            from flows.sweep import SHOWN, sweep
            from tasks.tables import render_table

            rows = (sweep(base=config, grids=grids) if args.command == "sweep" else
                    report(spec=load_spec(args.spec), base=config, out_dir=args.out,
                           command=" ".join(["distillery", *(sys.argv[1:] if argv is None else argv)])))
            print("\n" + render_table(rows, SHOWN) + f"wall time {time.perf_counter() - started:.1f} s")
            return 0
        if args.command == "export":
            from flows.export import export

            outcomes, written = export(config, Path(args.to), command=_command_line(argv))
        else:
            outcomes = distill(config=config, until=until)
    except Exception as err:  # noqa: BLE001 - the CLI turns any failure into one message
        if args.debug:
            traceback.print_exc()
        disk = describe_os_error(err, config.runtime.artifact_root) if isinstance(err, OSError) else None
        print(f"distillery: {disk or f'{type(err).__name__}: {err}'}", file=sys.stderr)
        if not args.debug:
            print("distillery: rerun with --debug for the full traceback", file=sys.stderr)
        return 1
    _print_summary(outcomes, time.perf_counter() - started)
    if args.command == "export":
        print(f"exported to {written} (card: {written / 'card.md'})")
    return 0


def _command_line(argv: Sequence[str] | None) -> str:
    return shlex.join(["distillery", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
