"""The history of a pipeline's runs: one row per run through evaluate, kept in the artifact root
and shown on the dashboard, so scheduled reruns show how the results move and why.

A row holds the date, each data split's identity and what changed since the previous run
(``train: 60,001 images, digest a1b2c3d4 (was 9f8e7d6c)``), the teacher's and the students'
test top-1 (mean ± std at each label compression), the label bytes, the wall time and the
stages rebuilt. Rows are appended to ``<root>/history/<key>/runs.jsonl``; the key is the
deployment's name for a deployment run, else ``config-<hash>`` of the config and its root.
Each run publishes the table as the Prefect table artifact ``history-<key>`` and a plot of top-1
over the runs as the markdown artifact ``history-plot-<key>``, stable keys the dashboard keeps
a version of per run.

``evaluate.alert_drop`` guards against regressions: a student group (same label compression)
more than that below the previous run of the same key on the same data kind fails the run
(:class:`RegressionAlert`), after the row is written.

    record = history_row(config, identity, outcomes, previous=..., seconds=412.0, rebuilt=["evaluate"])
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from typing import Any

from flows.config import DistilleryConfig
from storage.artifacts import ArtifactRef, ArtifactStore, canonical_json
from storage.image_store import png_data_uri
from tasks.data.identity import SplitIdentity

HISTORY_STAGE, RUNS = "history", "runs.jsonl"
Row = dict[str, Any]


class RegressionAlert(RuntimeError):
    """A student fell more than evaluate.alert_drop below the previous run; carries the run's outcomes."""

    def __init__(self, message: str, outcomes: list[Any]) -> None:
        super().__init__(message)
        self.outcomes = outcomes


def history_key(config: DistilleryConfig, deployment: str | None) -> str:
    """The deployment's name (slugged), else ``config-<hash>`` of the config and its artifact root
    (the other runtime settings and the alert aside): the runs of one config on one root."""
    if deployment:
        return re.sub(r"[^a-z0-9-]+", "-", deployment.lower()).strip("-") or "deployment"
    identity = {"root": config.runtime.artifact_root,
                **config.model_dump(mode="json", exclude={"runtime": True, "evaluate": {"alert_drop"}})}
    return "config-" + hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:12]


def _ref(key: str) -> ArtifactRef:
    return ArtifactRef(stage=HISTORY_STAGE, fingerprint=key)


def read_history(store: ArtifactStore, key: str) -> list[Row]:
    """Every row of ``key``'s history, oldest first (none yet: an empty list)."""
    if not store.exists(_ref(key), RUNS):
        return []
    return [json.loads(line) for line in store.read_bytes(_ref(key), RUNS).decode().splitlines() if line.strip()]


def append_row(store: ArtifactStore, key: str, row: Row) -> list[Row]:
    """Add ``row`` to ``key``'s history (the file rewritten whole, then renamed); the history with it."""
    rows = [*read_history(store, key), row]
    store.write_bytes(_ref(key), RUNS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())
    return rows


def data_changes(identity: dict[str, SplitIdentity], previous: Row | None) -> list[str]:
    """One line per split whose identity differs from the previous run's (none for a first run)."""
    if previous is None:
        return []
    lines = []
    for split, now in identity.items():
        before = previous["data"].get(split)
        if before is not None and before["digest"] != now.digest:
            lines.append(f"{split}: {now.images:,} images, digest {now.short()} (was {before['digest'][:8]}, "
                         f"{before['images']:,} images)")
    return lines


def history_row(config: DistilleryConfig, identity: dict[str, SplitIdentity], outcomes: list[Any], *,
                previous: Row | None, seconds: float, rebuilt: list[str]) -> Row:
    """This run as a history row; ``outcomes`` are the flow's StageOutcomes."""
    students = [o for o in outcomes if o.ref.stage == "evaluate"]
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data_name": config.data.name,
        "data": {split: ident.model_dump() for split, ident in identity.items()},
        "data_changes": data_changes(identity, previous),
        "teacher_test_top1": students[-1].metrics["teacher_test_top1"] if students else None,
        "students": [{"compression": round(o.metrics["label_compression"], 2), "labels": _labels(o.metrics),
                      "test_top1": o.metrics["test_top1"], "test_top1_std": o.metrics["test_top1_std"],
                      "label_bytes": int(o.metrics["labels_store_bytes"])} for o in students],
        "seconds": round(seconds, 1),
        "rebuilt": rebuilt,
    }


def _labels(metrics: dict[str, float]) -> str:
    return f"{metrics['label_compression']:.4g}x" if metrics["label_steps"] else "hard"


def previous_of_kind(rows: list[Row], data_name: str) -> Row | None:
    """The latest row on the same kind of data (``data.name``), or None."""
    return next((row for row in reversed(rows) if row["data_name"] == data_name), None)


def regression(row: Row, previous: Row | None, drop: float | None) -> str | None:
    """Why this run is a regression against ``previous`` (one line), or None."""
    if drop is None or previous is None:
        return None
    before = {s["labels"]: s["test_top1"] for s in previous["students"]}
    fallen = [f"students {s['labels']} {s['test_top1']:.4f} < {before[s['labels']]:.4f} - {drop:g}"
              for s in row["students"] if s["labels"] in before and s["test_top1"] < before[s["labels"]] - drop]
    if not fallen:
        return None
    return (f"regression against the run of {previous['date']}: {'; '.join(fallen)} (evaluate.alert_drop={drop:g}); "
            "see the history artifact for the trend")


def table_rows(rows: list[Row]) -> list[dict[str, str]]:
    """The history as flat table rows, newest first: one column per student group."""
    flat = []
    for row in reversed(rows):
        splits = sorted(row["data"].items(), key=lambda item: (item[0] != "train", item[0]))  # train first
        cells = {"date": row["date"], "data": " ".join(f"{s}={d['digest'][:8]} ({d['images']:,})" for s, d in splits)}
        if row["teacher_test_top1"] is not None:
            cells["teacher"] = f"{row['teacher_test_top1']:.4f}"
        for student in row["students"]:
            cells[f"students {student['labels']}"] = f"{student['test_top1']:.4f} ± {student['test_top1_std']:.4f}"
            cells[f"labels {student['labels']} KiB"] = f"{student['label_bytes'] / 1024:,.1f}"
        cells.update({"wall s": f"{row['seconds']:.0f}", "rebuilt": ", ".join(row["rebuilt"]) or "none",
                      "data changed": "; ".join(row["data_changes"])})
        flat.append(cells)
    return flat


def plot_png(rows: list[Row]) -> bytes:
    """PNG: test top-1 of the teacher and each student group over the runs (oldest left)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 3.2))
    runs = range(len(rows))
    groups = sorted({s["labels"] for row in rows for s in row["students"]})
    for group in groups:
        points = [(i, s["test_top1"], s["test_top1_std"]) for i, row in enumerate(rows)
                  for s in row["students"] if s["labels"] == group]
        axis.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                      capsize=3, label=f"students {group}")
    teacher = [(i, row["teacher_test_top1"]) for i, row in enumerate(rows) if row["teacher_test_top1"] is not None]
    if teacher:
        axis.plot([p[0] for p in teacher], [p[1] for p in teacher], "k--", marker="s", label="teacher")
    axis.set_xticks(list(runs), [row["date"][:16].replace("T", "\n") for row in rows], fontsize=7)
    axis.set_ylabel("test top-1")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def publish(key: str, rows: list[Row]) -> None:
    """The history as a Prefect table artifact and its plot as a markdown one (stable keys per history)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_table_artifact(key=f"history-{key}", table=table_rows(rows),
                          description=f"{len(rows)} runs of {key}, newest first")
    create_markdown_artifact(key=f"history-plot-{key}",
                             markdown=f"![test top-1 over the runs of {key}]({png_data_uri(plot_png(rows))})",
                             description=f"test top-1 over the {len(rows)} runs of {key}")
