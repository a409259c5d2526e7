"""Sweep results as data: one row per grid point, and the tables, CSV and plot made from rows.

A row is flat and JSON-safe (it becomes a Prefect table artifact as it is):

    {"mode": "lpld", "ipc": 10, "labels": "soft", "compression": 40.0, "test_top1": 0.67, ...}

``mode`` is ``full`` for the full-real-data reference and ``lpld+real`` for lpld started from
real images; ``compression`` is the factor asked for, 1 / (1 - prune ratio), and
``real_compression`` the one stored (stream steps / kept steps; 0 for hard labels: none are
stored); ``smaller_than_fp16`` is the unpruned fp16 size (images x E x classes x 2 bytes) over
the bytes the store takes on disk. ``top1_per_seed`` and ``similarity_per_class`` carry what
paired differences need.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

Row = dict[str, Any]
COLUMNS = (
    "mode", "ipc", "labels", "compression", "real_compression", "prune_rule", "label_format", "test_top1",
    "test_top1_std", "label_bytes", "smaller_than_fp16", "image_bytes", "within_class_similarity", "teacher_agreement", "student_steps",
    "evaluate_seconds", "evaluate_state", "evaluate", "images", "point", "top1_per_seed", "similarity_per_class",
)


def result_row(
    point: dict[str, str], config: Any, manifests: dict[str, dict[str, Any]], *, evaluate_state: str,
    images_fingerprint: str,
) -> Row:
    """The row of one grid point: ``config`` is its DistilleryConfig, ``manifests`` keyed by stage."""
    full = config.evaluate.train_set == "full"
    soft = config.evaluate.labels == "soft"
    evaluate, images = manifests["evaluate"]["metrics"], manifests.get("synthesize", {}).get("metrics", {})
    labels = manifests.get("prune", manifests.get("relabel", {})).get("metrics")  # the store the students read
    mode = config.synthesis.mode + ("+real" if config.synthesis.init == "real" and config.synthesis.mode != "random_real" else "")
    return {
        "mode": "full" if full else mode,
        "ipc": None if full else config.synthesis.ipc,
        "labels": config.evaluate.labels,
        "compression": round(1.0 / (1.0 - config.prune.ratio), 2) if soft else 0.0,
        "real_compression": round(evaluate["label_compression"], 2),
        "prune_rule": (config.prune.rule if config.prune.ratio > 0 else "none") if soft else "",
        "label_format": config.relabel.label_format + ("+seed" if config.relabel.augmentation == "seed" else "")
        if soft else "",
        "test_top1": round(evaluate["test_top1"], 4),
        "test_top1_std": round(evaluate["test_top1_std"], 4),
        "label_bytes": int(evaluate["labels_store_bytes"]),
        "smaller_than_fp16": round(labels["compression_vs_unpruned_fp16"], 1) if labels else 0.0,
        "image_bytes": int(evaluate["images_store_bytes"]),
        "within_class_similarity": _rounded(images.get("within_class_similarity")),
        "teacher_agreement": _rounded(images.get("teacher_agreement")),
        "student_steps": int(evaluate["student_steps"]),
        "evaluate_seconds": round(manifests["evaluate"]["seconds"], 1),
        "evaluate_state": evaluate_state,
        "evaluate": manifests["evaluate"]["fingerprint"],
        "images": images_fingerprint,
        "point": " ".join(f"{k}={v}" for k, v in point.items()),
        "top1_per_seed": [round(v, 4) for v in manifests["evaluate"]["test_top1_per_seed"]],
        "similarity_per_class": [round(v, 4) for v in manifests.get("synthesize", {}).get("within_class_similarity_per_class", [])],
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
    """``0.7244 ± 0.0121`` or ``n/a`` when the sweep did not have that point."""
    return "n/a" if row is None else f"{row['test_top1']:.4f} ± {row['test_top1_std']:.4f}"


def paired_difference(a: Row, b: Row, *, key: str = "top1_per_seed") -> tuple[float, float]:
    """Mean of ``a[key][i] - b[key][i]`` over the paired values and its standard error.

    Pairs are seed indices (students of one index share their initial weights) or classes.
    With fewer than two pairs the error is unknown and returned as infinity, so no claim settles.
    """
    pairs = [x - y for x, y in zip(a[key], b[key])]
    if len(pairs) < 2:
        return (pairs[0] if pairs else math.nan), math.inf
    mean = sum(pairs) / len(pairs)
    spread = math.sqrt(sum((d - mean) ** 2 for d in pairs) / (len(pairs) - 1))
    return mean, spread / math.sqrt(len(pairs))


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
