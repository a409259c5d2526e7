"""One handler per `distillery` command: ``handler(args, command_line) -> exit code``.

The commands that run the pipeline (run, export, sweep, report, bench) share one opening and
one ending (:func:`long_running`): resolve the config (exit 2 on a bad one), refuse a run that
would fail at once (exit 2, before Prefect starts), start Prefect's temporary server in its own
session, and turn any failure into one message (exit 1). Imports are made inside the handlers,
so a command pays only for what it uses.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from flows.config import DistilleryConfig

Handler = Callable[[argparse.Namespace, str], int]
Body = Callable[[argparse.Namespace, "DistilleryConfig", list, str], int]  # (args, config, grids, command line)


def _say(message: object) -> None:
    print(f"distillery: {message}", file=sys.stderr)


def presets(args: argparse.Namespace, line: str) -> int:
    from flows.config import preset_names

    print("\n".join(preset_names()))
    return 0


def bench_labels(args: argparse.Namespace, line: str) -> int:
    from flows.tables import render_table
    from tasks.bench.side_by_side import label_store_reads

    root = args.artifact_root
    if not Path(root).is_dir():
        _say(f"artifact root {root} is not a folder; give the local root whose label stores to read with --artifact-root")
        return 2
    rows = label_store_reads(root, passes=max(args.passes, 1), reads=max(args.reads, 1))
    print(render_table(rows, style="text"), end="")
    return 0


def verify(args: argparse.Namespace, line: str) -> int:
    from flows.config import HOME_ENV
    from storage.verify import format_findings, verify_tree

    try:
        findings = verify_tree(args.artifact_root or os.environ.get(HOME_ENV) or "artifacts")
    except FileNotFoundError as err:
        _say(err)
        return 2
    print(format_findings(findings))
    return 1 if any(f.status == "damaged" for f in findings) else 0


def serve(args: argparse.Namespace, line: str) -> int:
    from flows.serve import ServeError, deployment_entries, refuse_pooled, running_api_url
    from flows.serve import serve as serve_entries

    try:
        entries = deployment_entries()
        running_api_url()
        refuse_pooled(entries)
    except ServeError as err:
        _say(err)
        return 2
    return serve_entries(entries)


def _resolve(args: argparse.Namespace) -> tuple[DistilleryConfig, list]:
    """The config (and for sweep / report, the grids) the command runs; ConfigError if unusable."""
    from flows.config import (DEFAULT_PRESET, ConfigError, grid_points, parse_grid, resolve_config, split_point,
                              with_overrides)

    if args.command == "bench":
        import tempfile

        root = args.artifact_root or tempfile.mkdtemp(prefix="distillery-bench-")
        if Path(root).exists() and any(Path(root).iterdir()):
            raise ConfigError(f"bench root {root} is not empty; give an empty folder (cold runs are measured)")
        return resolve_config(preset=args.preset, overrides=args.overrides, artifact_root=root), []
    if args.command == "report":
        from flows.report_spec import check_rows_distinct, load_spec

        spec = load_spec(args.spec)
        config, grids = spec.base(artifact_root=args.artifact_root, device=args.device), list(spec.grids)
        check_rows_distinct(spec, config)
    else:
        config = resolve_config(
            config_file=args.config, preset=args.preset or (None if args.config else DEFAULT_PRESET),
            overrides=[*args.overrides, *runtime_overrides(args)], artifact_root=args.artifact_root, device=args.device,
        )
        grids = [parse_grid(args.grid)] if args.command == "sweep" else []
    for grid in grids:
        for point in grid_points(grid):
            with_overrides(config, split_point(point, 1)[0])  # every point valid before anything runs
    return config, grids


def runtime_overrides(args: argparse.Namespace) -> list[str]:
    """The runtime flags as ``--set`` assignments (they win over the config file)."""
    overrides = []
    if getattr(args, "task_runner", None) or getattr(args, "dask_address", None):
        overrides.append(f"runtime.task_runner={args.task_runner or 'dask'}")
    if getattr(args, "dask_address", None):
        overrides.append(f"runtime.dask_address={args.dask_address}")
    return overrides


def show_config(args: argparse.Namespace, line: str) -> int:
    from flows.config import ConfigError, dump_yaml

    try:
        config, _ = _resolve(args)
    except ConfigError as err:
        _say(err)
        return 2
    print(dump_yaml(config), end="")
    return 0


def long_running(body: Body) -> Handler:
    """A pipeline command: checks that exit 2 before Prefect starts, then ``body``; any failure is exit 1."""

    def handler(args: argparse.Namespace, line: str) -> int:
        from flows.config import ConfigError
        from flows.preflight import describe_os_error, grid_refusal, quiet_tracebacks, refusal
        from flows.shutdown import notice_prefect_bridge
        from flows.temporary_server import temporary_server_in_own_session
        from tasks.stages import STAGES

        try:
            config, grids = _resolve(args)
        except ConfigError as err:
            _say(err)
            return 2
        if (getattr(args, "until", None) or STAGES[-1]) not in STAGES:
            _say(f"--until {args.until!r} is not a stage; choose one of: {', '.join(STAGES)}")
            return 2
        if why := (refusal(config, export_to=Path(args.to) if args.command == "export" else None)
                   or grid_refusal(config, grids)):
            _say(why)
            return 2
        notice_prefect_bridge()
        temporary_server_in_own_session()
        if not args.debug:
            quiet_tracebacks()
        try:
            return body(args, config, grids, line)
        except Exception as err:  # noqa: BLE001 - the CLI turns any failure into one message
            if args.debug:
                traceback.print_exc()
            disk = describe_os_error(err, config.runtime.artifact_root) if isinstance(err, OSError) else None
            _say(disk or f"{type(err).__name__}: {err}")
            if not args.debug:
                _say("rerun with --debug for the full traceback")
            return 1

    handler.__name__, handler.__doc__ = body.__name__, body.__doc__
    return handler


@long_running
def run(args: argparse.Namespace, config: DistilleryConfig, grids: list, line: str) -> int:
    """The pipeline up to --until, then the summary (and the regression, when the run is one)."""
    from flows.distill import STAGES, distill
    from flows.history import RegressionAlert

    started = time.perf_counter()
    try:
        outcomes = distill(config=config, until=args.until or STAGES[-1])
    except RegressionAlert as alert:
        print_summary(alert.outcomes, time.perf_counter() - started, config=config)
        _say(alert)
        return 1
    print_summary(outcomes, time.perf_counter() - started, config=config)
    return 0


@long_running
def export(args: argparse.Namespace, config: DistilleryConfig, grids: list, line: str) -> int:
    """The pipeline through evaluate, then the export folder."""
    from flows.export import export as export_to

    started = time.perf_counter()
    outcomes, written = export_to(config, Path(args.to), command=line)
    print_summary(outcomes, time.perf_counter() - started, config=config)
    print(f"exported to {written} (card: {written / 'card.md'})")
    return 0


@long_running
def sweep(args: argparse.Namespace, config: DistilleryConfig, grids: list, line: str) -> int:
    """The pipeline over the grid; one results table."""
    from flows.sweep import RESULTS_CSV, RESULTS_MD, SHOWN, sweep_ref
    from flows.sweep import sweep as sweep_flow
    from flows.tables import render_table
    from storage.artifacts import ArtifactStore

    started = time.perf_counter()
    rows = sweep_flow(base=config, grids=grids)
    folder = ArtifactStore(config.runtime.artifact_root).location(sweep_ref(config, grids))
    print("\n" + render_table(rows, SHOWN) + f"wall time {time.perf_counter() - started:.1f} s; "
          f"tables in {folder}/{RESULTS_MD} (every column: {RESULTS_CSV})")
    return 0


@long_running
def report(args: argparse.Namespace, config: DistilleryConfig, grids: list, line: str) -> int:
    """A report spec's sweep, written to --out."""
    from flows.report import report as report_flow
    from flows.report_spec import load_spec
    from flows.sweep import SHOWN
    from flows.tables import render_table

    started = time.perf_counter()
    rows = report_flow(spec=load_spec(args.spec), base=config, out_dir=args.out, command=line)
    print("\n" + render_table(rows, SHOWN) + f"wall time {time.perf_counter() - started:.1f} s")
    return 0


@long_running
def bench(args: argparse.Namespace, config: DistilleryConfig, grids: list, line: str) -> int:
    """Where time goes: the ratios measured side by side."""
    from flows.bench import bench as bench_flow
    from flows.tables import render_table

    started = time.perf_counter()
    rows = bench_flow(config=config, passes=max(args.passes, 1))
    ratios, stores = [r for r in rows if "measure" in r], [r for r in rows if "measure" not in r]  # two tables
    print("\n" + render_table(ratios, style="text") + "\n" + render_table(stores, style="text")
          + f"wall time {time.perf_counter() - started:.1f} s; tables in {Path(config.runtime.artifact_root) / 'bench.md'}")
    return 0


def print_summary(outcomes: list[Any], wall_seconds: float, *, config: DistilleryConfig) -> None:  # StageOutcomes
    from flows.distill import summary_rows
    from flows.tables import render_table

    print("\n" + render_table(summary_rows(outcomes), style="text"), end="")
    print("artifacts:\n" + "".join(f"  {o.ref.stage:<10} {o.path}\n" for o in outcomes), end="")
    print_data(outcomes, config)
    students = [o for o in outcomes if o.ref.stage == "evaluate"]
    if students:
        print("\nstudents (top-1, mean ± std over seeds):")
        print(f"  {'':<52} {'validation':<17} test")
        for o in students:
            m = o.metrics
            labels = (f"soft labels {m['label_compression']:.4g}x: {m['label_steps']:.0f} stored steps, "
                      f"{m['labels_store_bytes'] / 1024:,.1f} KiB" if m["label_steps"] else "hard labels")
            print(f"  {labels:<52} {_top1(m, 'val'):<17} {_top1(m, 'test')}")
        teacher = students[-1].metrics
        print(f"  {'teacher':<52} {_top1(teacher, 'teacher_val'):<17} {_top1(teacher, 'teacher_test')}")
    print(f"wall time {wall_seconds:.1f} s")


def _top1(metrics: dict[str, float], split: str) -> str:
    """``split``'s top-1 as mean ± std where the run has it (a data set without validation has no val)."""
    if f"{split}_top1" not in metrics:
        return "-"
    std = metrics.get(f"{split}_top1_std")
    return f"{metrics[f'{split}_top1']:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def print_data(outcomes: list[Any], config: DistilleryConfig) -> None:
    """Which data the run's stages are named by, and what changed since the previous run of this config."""
    from flows import history
    from storage.artifacts import ArtifactStore

    store = ArtifactStore(config.runtime.artifact_root)
    identity: dict[str, dict] = {}
    for outcome in outcomes:
        identity.update(store.read_manifest(outcome.ref)["config"].get("data_identity", {}))
    print("data: " + ", ".join(f"{split} {ident['images']:,} images (digest {ident['digest'][:8]})"
                               for split, ident in identity.items()))
    rows = history.read_history(store, history.history_key(config, None)) if outcomes[-1].ref.stage == "evaluate" else []
    for line in rows[-1]["data_changes"] if rows else []:
        print(f"data changed since the previous run: {line}")


HANDLERS: dict[str, Handler] = {
    "run": run, "export": export, "sweep": sweep, "report": report, "bench": bench, "config": show_config,
    "presets": presets, "bench-labels": bench_labels, "verify": verify, "serve": serve,
}
