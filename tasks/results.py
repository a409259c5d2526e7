"""Sweep results as data: one row per grid point, and the tables, CSV and plot made from rows.

A row is flat and JSON-safe (it becomes a Prefect table artifact as it is):

    {"mode": "lpld", "ipc": 10, "labels": "soft", "compression": 40.0, "test_top1": 0.67, ...}

``mode`` is ``full`` for the full-real-data reference; ``compression`` is 1 / (1 - prune
ratio), the factor by which the soft labels were cut (0 for hard labels: none are stored).
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Iterable

Row = dict[str, Any]
COLUMNS = (
    "mode", "ipc", "labels", "compression", "label_format", "test_top1", "test_top1_std", "label_bytes",
    "image_bytes", "within_class_similarity", "teacher_agreement", "student_steps", "evaluate_seconds",
    "evaluate_state", "evaluate", "images", "point",
)


def result_row(
    point: dict[str, str], config: Any, stage_metrics: dict[str, dict[str, float]], *, evaluate_state: str,
    evaluate_fingerprint: str, evaluate_seconds: float, student_steps: int, images_fingerprint: str,
) -> Row:
    """The row of one grid point: ``config`` is its DistilleryConfig, metrics keyed by stage."""
    full = config.evaluate.train_set == "full"
    soft = config.evaluate.labels == "soft"
    evaluate, images = stage_metrics["evaluate"], stage_metrics.get("synthesize", {})
    return {
        "mode": "full" if full else config.synthesis.mode,
        "ipc": None if full else config.synthesis.ipc,
        "labels": config.evaluate.labels,
        "compression": round(1.0 / (1.0 - config.prune.ratio), 2) if soft else 0.0,
        "label_format": config.relabel.label_format if soft else "",
        "test_top1": round(evaluate["test_top1"], 4),
        "test_top1_std": round(evaluate["test_top1_std"], 4),
        "label_bytes": int(evaluate["labels_store_bytes"]),
        "image_bytes": int(evaluate["images_store_bytes"]),
        "within_class_similarity": _rounded(images.get("within_class_similarity")),
        "teacher_agreement": _rounded(images.get("teacher_agreement")),
        "student_steps": student_steps,
        "evaluate_seconds": round(evaluate_seconds, 1),
        "evaluate_state": evaluate_state,
        "evaluate": evaluate_fingerprint,
        "images": images_fingerprint,
        "point": " ".join(f"{k}={v}" for k, v in point.items()),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def to_csv(rows: list[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_markdown(rows: Iterable[Row], columns: Iterable[str] | None = None) -> str:
    rows = list(rows)
    columns = list(columns or rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if row.get(c) is None else str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def find(rows: list[Row], **where: Any) -> Row | None:
    """The first row matching every ``column=value`` (hard-label rows match any compression)."""
    return next((r for r in rows if all(r.get(k) == v for k, v in where.items())), None)


def pm(row: Row | None) -> str:
    """``0.7244 ± 0.0121`` or ``n/a`` when the sweep did not have that point."""
    return "n/a" if row is None else f"{row['test_top1']:.4f} ± {row['test_top1_std']:.4f}"


def difference(a: Row, b: Row) -> tuple[float, float]:
    """a - b in test top-1 and its standard error (the two stds added in quadrature)."""
    return a["test_top1"] - b["test_top1"], math.hypot(a["test_top1_std"], b["test_top1_std"])


def plot_accuracy_vs_label_bytes(rows: list[Row]) -> bytes:
    """PNG: test top-1 (± std) against soft-label bytes, one line per mode, one panel per IPC."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import NullFormatter

    soft = [r for r in rows if r["labels"] == "soft" and r["label_bytes"] > 0]
    ipcs = sorted({r["ipc"] for r in soft})
    figure, axes = plt.subplots(1, max(len(ipcs), 1), figsize=(5.5 * max(len(ipcs), 1), 4), squeeze=False)
    for axis, ipc in zip(axes[0], ipcs):
        for mode in sorted({r["mode"] for r in soft if r["ipc"] == ipc}):
            line = sorted((r for r in soft if r["ipc"] == ipc and r["mode"] == mode), key=lambda r: r["label_bytes"])
            axis.errorbar([r["label_bytes"] / 1024 for r in line], [r["test_top1"] for r in line],
                          yerr=[r["test_top1_std"] for r in line], marker="o", capsize=3, label=mode)
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
