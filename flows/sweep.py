"""The `sweep` flow: the distill flow over a grid of settings, one results table.

Each grid point is a full config; each runs as a `distill` subflow, so every upstream artifact
shared between points (teacher, statistics, images, labels) is built once and reused, and a
rerun is all `Cached`. The results go to the dashboard (table artifact ``sweep-results`` and a
markdown artifact) and to files under ``<artifact root>/sweep/<fingerprint>/``.

    distillery sweep --grid synthesis.mode=lpld,sre2l --grid prune.ratio=0,0.9,0.975
"""

from __future__ import annotations

import csv
import hashlib
import io

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.config import DistilleryConfig, grid_points, with_overrides
from flows.distill import StageOutcome, distill
from storage.artifacts import ArtifactRef, ArtifactStore, canonical_json

RESULTS_CSV, RESULTS_MD = "results.csv", "results.md"


def result_row(point: dict[str, str], outcomes: list[StageOutcome]) -> dict[str, object]:
    by_stage = {o.ref.stage: o for o in outcomes}
    evaluate, images = by_stage["evaluate"].metrics, by_stage["synthesize"].metrics
    return {
        **point,
        "test_top1": round(evaluate["test_top1"], 4),
        "test_top1_std": round(evaluate["test_top1_std"], 4),
        "label_bytes": int(evaluate["labels_store_bytes"]),
        "image_bytes": int(evaluate["images_store_bytes"]),
        "within_class_similarity": round(images["within_class_similarity"], 4),
        "evaluate": by_stage["evaluate"].ref.fingerprint,
        "evaluate_state": by_stage["evaluate"].state,
    }


def to_csv(rows: list[dict[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_markdown(rows: list[dict[str, object]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


@flow(name="sweep", validate_parameters=True)
def sweep(base: DistilleryConfig, grid: dict[str, list[str]]) -> list[dict[str, object]]:
    """Run ``base`` with every grid point applied; return (and publish) one row per point."""
    points = grid_points(grid)
    rows = []
    for point in points:
        config = with_overrides(base, point)
        rows.append(result_row(point, distill(config=config, until="evaluate")))
    identity = canonical_json({"base": base.model_dump(mode="json", exclude={"runtime"}), "grid": grid})
    ref = ArtifactRef(stage="sweep", fingerprint=hashlib.sha256(identity.encode()).hexdigest()[:32])
    store = ArtifactStore(base.runtime.artifact_root)
    table = to_markdown(rows)
    store.write_bytes(ref, RESULTS_CSV, to_csv(rows).encode())
    store.write_bytes(ref, RESULTS_MD, table.encode())
    create_table_artifact(key="sweep-results", table=rows, description=f"{len(rows)} grid points; {store.path(ref)}")
    create_markdown_artifact(key="sweep-report", markdown=f"# Sweep\n\n{table}", description="test top-1 per grid point")
    return rows
