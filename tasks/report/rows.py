"""Sweep results as data: one row per grid point, and the tables, CSV and plot made from rows.

A row is flat and JSON-safe (it becomes a Prefect table artifact as it is):

    {"mode": "lpld", "ipc": 10, "labels": "soft", "compression": 40.0, "val_top1": 0.84, "test_top1": 0.83, ...}

A point is run as R replicates of the whole pipeline (``replicates``): replicate r has its own
synthesis initialisation, label stream, random real subset and student initialisation, all drawn
from its run seed; the teacher is shared or not (``teacher``). ``val_top1`` / ``test_top1`` are
means over the replicates (each replicate's own mean over its students) and ``*_std`` their
spread; ``test_runs``, ``val_runs`` and ``similarity_runs`` carry one value per replicate for
the paired differences of the claims. With R = 1 the students' seeds are the only replicates:
the runs are the per-seed values (and the similarity runs the per-class values).

``mode`` is ``full`` for the full-real-data reference, ``lpld+real`` for lpld started from real
images, ``sre2l+pooled`` for sre2l matching the pooled exact statistics; ``compression`` is the
factor asked for, 1 / (1 - prune ratio), and ``real_compression`` the one stored (stream steps /
kept steps; 0 for hard labels: none are stored); ``smaller_than_fp16`` is the unpruned fp16
size (images x E x classes x 2 bytes) over the bytes the store takes on disk.
"""

from __future__ import annotations

import csv
import io
from statistics import fmean, stdev
from typing import Any, NamedTuple

Row = dict[str, Any]
COLUMNS = (
    "mode", "ipc", "labels", "compression", "real_compression", "prune_rule", "label_format", "replicates",
    "val_top1", "val_top1_std", "test_top1", "test_top1_std", "teacher", "label_bytes", "smaller_than_fp16",
    "image_bytes", "within_class_similarity", "teacher_agreement", "student_steps", "evaluate_seconds",
    "evaluate_state", "evaluate", "images", "point", "test_runs", "val_runs", "similarity_runs",
)


def mode_name(config: Any) -> str:
    """The image set a config makes: its mode (``select-<criterion>``, ``x2`` for stitched crops),
    ``+real`` / ``+<criterion>`` when recovery starts from real or selected images, ``+pooled`` for
    sre2l on the pooled exact statistics, ``full`` for the full-data reference."""
    synthesis = config.synthesis
    if config.evaluate.train_set == "full":
        return "full"
    selection = synthesis.selection
    chosen = selection.criterion + (f"x{selection.factor}" if selection.factor > 1 and selection.criterion == "easy" else "")
    name = f"select-{chosen}" if synthesis.mode == "select" else synthesis.mode
    suffix = {"real": "+real", "selected": f"+{chosen}"}.get(synthesis.init, "")
    return name + suffix + ("+pooled" if synthesis.sre2l_statistics == "pooled" else "")


class RowIdentity(NamedTuple):
    """What the claims find a row by (its columns of the same names), and the label epochs that set
    the student's steps. Two points of one report with the same identity are two rows no claim can
    tell apart."""

    mode: str
    ipc: int | None
    labels: str
    compression: float
    prune_rule: str
    label_format: str
    epochs: int


def row_identity(config: Any) -> RowIdentity:
    """The :class:`RowIdentity` a config's point makes."""
    soft = config.evaluate.labels == "soft"
    return RowIdentity(
        mode_name(config),
        None if config.evaluate.train_set == "full" else config.synthesis.ipc,
        config.evaluate.labels,
        round(1.0 / (1.0 - config.prune.ratio), 2) if soft else 0.0,
        (config.prune.rule if config.prune.ratio > 0 else "none") if soft else "",
        config.relabel.label_format + ("" if config.relabel.augmentation == "boxes"
                                       else f"+{config.relabel.augmentation}") if soft else "",
        config.relabel.epochs,
    )


def _runs(values_per_replicate: list[list[float]]) -> list[float]:
    """One value per replicate (its mean), or the single replicate's values themselves; none when a
    replicate has none (within-class similarity at IPC 1: one image a class has no pairs)."""
    if len(values_per_replicate) == 1:
        return list(values_per_replicate[0])
    return [fmean(values) for values in values_per_replicate] if all(values_per_replicate) else []


def _spread(values: list[float]) -> float:
    return stdev(values) if len(values) > 1 else 0.0


def result_row(
    point: dict[str, str], config: Any, replicates: list[dict[str, dict[str, Any]]], *, evaluate_state: str,
    images_fingerprint: str, shared_teacher: bool,
) -> Row:
    """The row of one grid point: ``config`` is its DistilleryConfig (replicate 0's), ``replicates`` one
    ``{stage: manifest}`` per replicate."""
    first = replicates[0]
    evaluate, images = first["evaluate"]["metrics"], first.get("synthesize", {}).get("metrics", {})
    labels = first.get("prune", first.get("relabel", {})).get("metrics")  # the store the students read
    runs = {split: _runs([m["evaluate"].get(f"{split}_top1_per_seed", []) for m in replicates]) for split in ("val", "test")}
    similarity = (_runs([m["synthesize"].get("within_class_similarity_per_class", []) for m in replicates])
                  if "synthesize" in first else [])
    identity = row_identity(config)
    return {
        "mode": identity.mode,
        "ipc": identity.ipc,
        "labels": identity.labels,
        "compression": identity.compression,
        "real_compression": round(evaluate["label_compression"], 2),
        "prune_rule": identity.prune_rule,
        "label_format": identity.label_format,
        "replicates": len(replicates),
        **{key: value for split in ("val", "test") for key, value in (
            (f"{split}_top1", round(fmean(runs[split]), 4) if runs[split] else None),
            (f"{split}_top1_std", round(_spread(runs[split]), 4) if runs[split] else None))},
        "teacher": "shared" if shared_teacher else "replicated",
        "label_bytes": int(evaluate["labels_store_bytes"]),
        "smaller_than_fp16": round(labels["compression_vs_unpruned_fp16"], 1) if labels else 0.0,
        "image_bytes": int(evaluate["images_store_bytes"]),
        "within_class_similarity": _rounded(fmean(similarity) if similarity else None),
        "teacher_agreement": _rounded(images.get("teacher_agreement")),
        "student_steps": int(evaluate["student_steps"]),
        "evaluate_seconds": round(sum(m["evaluate"]["seconds"] for m in replicates), 1),
        "evaluate_state": evaluate_state,
        "evaluate": first["evaluate"]["fingerprint"],
        "images": images_fingerprint,
        "point": " ".join(f"{k}={v}" for k, v in point.items()),
        "test_runs": [round(v, 4) for v in runs["test"]],
        "val_runs": [round(v, 4) for v in runs["val"]],
        "similarity_runs": [round(v, 4) for v in similarity],
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def to_csv(rows: list[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def find(rows: list[Row], **where: Any) -> Row | None:
    """The first row matching every ``column=value`` (hard-label rows match any compression)."""
    return next((r for r in rows if all(r.get(k) == v for k, v in where.items())), None)


def pm(row: Row | None) -> str:
    """``0.7244 ± 0.0121`` (test top-1) or ``n/a`` when the sweep did not have that point."""
    return "n/a" if row is None else f"{row['test_top1']:.4f} ± {row['test_top1_std']:.4f}"


def plot_accuracy_vs_label_bytes(rows: list[Row]) -> bytes:
    """PNG: test top-1 (± std) against soft-label bytes, one line per mode and label format, one
    panel per IPC."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import NullFormatter

    soft = [r for r in rows if r["labels"] == "soft" and r["label_bytes"] > 0]
    ipcs = sorted({r["ipc"] for r in soft})
    figure, axes = plt.subplots(1, max(len(ipcs), 1), figsize=(5.5 * max(len(ipcs), 1), 4), squeeze=False)
    for axis, ipc in zip(axes[0], ipcs):
        for mode, fmt in sorted({(r["mode"], r["label_format"]) for r in soft if r["ipc"] == ipc}):
            line = sorted((r for r in soft if r["ipc"] == ipc and r["mode"] == mode and r["label_format"] == fmt),
                          key=lambda r: r["label_bytes"])
            axis.errorbar([r["label_bytes"] / 1024 for r in line], [r["test_top1"] for r in line],
                          yerr=[r["test_top1_std"] for r in line], marker="o" if fmt == "fp16" else "s", capsize=3,
                          linestyle="-" if len(line) > 1 else "none", label=f"{mode} {fmt}")
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())  # minor-tick labels collide on a short log axis
        axis.set_xlabel("soft-label store (KiB, log scale)")
        axis.set_ylabel("student test top-1")
        axis.set_title(f"IPC {ipc}")
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})  # no version stamp: same bytes
    plt.close(figure)
    return buffer.getvalue()
