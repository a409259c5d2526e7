"""The `report` flow: run a report spec's sweep and write the results report to a folder.

A report spec (``deploy/reports/<name>.yaml`` or any YAML file, :mod:`flows.report_spec`) names a
preset, overrides and the grids; the report is the sweep's table, the answers of
:mod:`tasks.report.claims`, DD-Ranking's scores, a plot of accuracy against label bytes and the
image grids, with the command, the machine and the sweep's wall times written beside the numbers. A rerun is all ``Cached`` and
rewrites the same numbers; its wall time is added to the list of runs.

    distillery report                       # deploy/reports/fashion_mnist.yaml -> docs/
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.config import REPLICATES, DistilleryConfig
from flows.report_spec import ReportSpec
from flows.sweep import Grid, points_of, sweep, sweep_runs
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.file_names import GRID
from storage.image_store import png_data_uri
from tasks.report.claims import answers, ranking_rows
from tasks.report.decisions import ALPHA
from tasks.report.knobs import at_baseline, knob_rows
from tasks.report.rows import Row, plot_accuracy_vs_label_bytes, to_csv
from flows.tables import render_table

DEFAULT_REPORT = "fashion_mnist"
REPORT_MD, REPORT_CSV, PLOT = "results.md", "results.csv", "results-accuracy-vs-label-bytes.png"
TABLE = ("mode", "ipc", "labels", "real_compression", "prune_rule", "label_format", "replicates", "val_top1",
         "val_top1_std", "test_top1", "test_top1_std", "label_bytes", "smaller_than_fp16", "image_bytes",
         "within_class_similarity", "teacher_agreement", "student_steps")


def machine() -> str:
    import torch

    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
            f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")


def timing_lines(runs: list[dict[str, object]]) -> list[str]:
    if not runs:
        return []
    first = float(runs[0]["seconds"])
    lines = [f"- first run: {first:.0f} s ({first / 60:.1f} min), {runs[0]['stages_computed']} stages computed"]
    for run in runs[1:]:
        seconds = float(run["seconds"])
        lines.append(f"- rerun {run['finished']}: {seconds:.1f} s = {100 * seconds / first:.1f} % of the first, "
                     f"{run['stages_computed']} stages computed")
    return lines


def claim_rows(spec: ReportSpec, rows: list[Row]) -> list[Row]:
    """The rows the claims, DD-Ranking, plot and grids read: the points at the baseline's values (all of
    them without a baseline); ``rows[i]`` is the result of the spec's i-th point. The knob table and the
    table of all points show every row."""
    return [row for point, row in zip(points_of(list(spec.grids)), rows) if at_baseline(point, spec.baseline)]


def render(spec: ReportSpec, rows: list[Row], *, command: str, runs: list[dict[str, object]]) -> str:
    out = [f"# {spec.title}", "", spec.notes.strip(), "",
           f"Regenerate with `{command}`: the `{spec.preset}` preset with {', '.join(spec.set) or 'no overrides'}.",
           f"Machine: {machine()}.", "", "Sweep wall time:", *timing_lines(runs), ""]
    teacher = "one teacher shared by every replicate" if spec.share_teacher else "a teacher per replicate"
    fewer = "" if not any(REPLICATES in grid for grid in spec.grids) else " unless its grid says otherwise (column `replicates`)"
    out += [f"Every point is {spec.replicates} replicates of the whole pipeline{fewer} ({teacher}; replicate r draws its "
            "synthesis initialisation, label stream, random real subset and student from run seed r). Each claim is a "
            "paired difference over replicates (replicate r against replicate r) with a 95 % two-sided t-interval on "
            f"n - 1 degrees of freedom; the report's decisions are Holm-corrected at {ALPHA:g}. A claim **holds** when "
            "its p-value passes Holm's level in its direction, **does not hold** when it passes the other way (a "
            "non-inferiority claim: when its interval lies wholly below minus the margin), and is **undecided** "
            f"otherwise, with about how many replicates would settle it at the observed spread. Non-inferiority "
            f"margin: {spec.margin:g} top-1. Test top-1 decides the claims; validation top-1 is shown beside it and "
            "is what knobs are chosen on (test top-1 never is).", ""]
    if spec.baseline:
        out += ["## Knobs against the preset's values (validation top-1)", "",
                "Each point that moves a knob against the point that differs from it only there, the knob at the "
                "preset's value: the paired difference of validation top-1 over the replicates, with its 95 % "
                "two-sided t-interval (n - 1 degrees of freedom, not Holm-corrected). A value **replaces** the "
                "preset's only when its interval lies wholly above 0. Test top-1 is not read here.", "",
                render_table(knob_rows(rows, points_of(list(spec.grids)), spec.baseline)), ""]
    read = claim_rows(spec, rows)
    for question, lines in answers(read, margin=spec.margin).items():
        out += [f"## {question}", "", *lines, ""]
    if spec.discussion.strip():
        out += ["## Discussion", "", spec.discussion.strip(), ""]
    ranking = ranking_rows(read)
    if ranking:
        out += ["## DD-Ranking: hard-label recovery, improvement over random, label-robust score", "",
                "On accuracy fractions; HLR = full-data hard - images' hard, IOR = soft - random_real soft "
                "(both at 1x), LRS in [0, 1], higher is better.", "", render_table(ranking)]
    out += ["## Accuracy against soft-label bytes", "", f"![accuracy against label bytes]({PLOT})", "",
            "## All points", "", "Validation and test top-1 are mean ± std over the replicates; `real_compression` is the "
            "soft-label pruning factor stored (stream steps / kept steps; 0 = hard labels, nothing stored) by "
            "`prune_rule`; bytes are on-disk store sizes and `smaller_than_fp16` the unpruned fp16 size over them.", "",
            render_table(rows, (*TABLE, "point") if spec.baseline else TABLE)]
    grids = _grid_names(read)
    if grids:
        out += ["## Image grids (one row per class)", ""]
        out += [f"![{name}](grids/{name})" for name in grids] + [""]
    return "\n".join(out)


def _grid_names(rows: list[Row]) -> dict[str, str]:
    """``{file name: images fingerprint}`` for the smallest IPC of each mode."""
    smallest = min((r["ipc"] for r in rows if r["ipc"] is not None), default=None)
    return {f"{r['mode']}-ipc{r['ipc']}.png": r["images"] for r in rows
            if r["ipc"] == smallest and r["images"]}


@flow(name="report", validate_parameters=True)
def report(spec: ReportSpec, base: DistilleryConfig, out_dir: str, command: str) -> list[Row]:
    """Run the spec's sweep, then write ``out_dir``/results.md, .csv, the plot and the image grids."""
    grids: list[Grid] = list(spec.grids)
    rows = sweep(base=base, grids=grids, replicates=spec.replicates, share_teacher=spec.share_teacher)
    read = claim_rows(spec, rows)
    out = Path(out_dir)
    (out / "grids").mkdir(parents=True, exist_ok=True)
    store = ArtifactStore(base.runtime.artifact_root)
    for name, fingerprint in _grid_names(read).items():
        (out / "grids" / name).write_bytes(store.read_bytes(ArtifactRef(stage="synthesize", fingerprint=fingerprint), GRID))
    plot = plot_accuracy_vs_label_bytes(read)
    (out / PLOT).write_bytes(plot)
    (out / REPORT_CSV).write_text(to_csv(rows))
    text = render(spec, rows, command=command, runs=sweep_runs(base, grids, spec.replicates, spec.share_teacher))
    (out / REPORT_MD).write_text(text)
    inline = text.replace(f"]({PLOT})", f"]({png_data_uri(plot)})")
    for name in _grid_names(read):  # the dashboard cannot follow relative links: pictures go inline
        inline = inline.replace(f"](grids/{name})", f"]({png_data_uri((out / 'grids' / name).read_bytes())})")
    create_markdown_artifact(key="results-report", markdown=inline, description=f"written to {out / REPORT_MD}")
    return rows
