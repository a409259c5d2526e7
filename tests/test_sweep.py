"""The sweep flow: grid parsing, one row per point, reuse of shared artifacts, published results."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from flows.config import ConfigError, grid_points, parse_grid, resolve_config, with_overrides
from flows.sweep import sweep
from tests.conftest import needs_fashion_mnist


def test_grid_specs_become_every_combination_in_order():
    grid = parse_grid(["synthesis.mode=lpld,sre2l", "prune.ratio=0, 0.9,0.975"])
    assert grid == {"synthesis.mode": ["lpld", "sre2l"], "prune.ratio": ["0", "0.9", "0.975"]}
    points = grid_points(grid)
    assert len(points) == 6 and points[0] == {"synthesis.mode": "lpld", "prune.ratio": "0"}
    assert points[-1] == {"synthesis.mode": "sre2l", "prune.ratio": "0.975"}


@pytest.mark.parametrize("spec, message", [
    ("synthesis", "must look like section.field=V1,V2"),
    ("synthesis.ipc=", "must look like section.field=V1,V2"),
])
def test_a_malformed_grid_spec_says_how_to_write_it(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid([spec])


def test_a_bad_grid_value_names_the_field():
    with pytest.raises(ConfigError, match=r"prune.ratio: Input should be less than 1 \(got 1.5\)"):
        with_overrides(resolve_config(preset="ci_tiny"), {"prune.ratio": "1.5"})


@needs_fashion_mnist
@pytest.mark.slow
def test_a_sweep_reuses_shared_stages_writes_results_and_reruns_cached(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    base = resolve_config(preset="ci_tiny", artifact_root=str(tmp_path / "a"))
    grid = parse_grid(["synthesis.mode=random_real,sre2l", "prune.ratio=0,0.5"])
    rows = sweep(base=base, grid=grid)
    assert [(r["synthesis.mode"], r["prune.ratio"]) for r in rows] == [
        ("random_real", "0"), ("random_real", "0.5"), ("sre2l", "0"), ("sre2l", "0.5")]
    assert all(0 < r["test_top1"] <= 1 and r["evaluate_state"] == "Completed" for r in rows)
    assert rows[1]["label_bytes"] < rows[0]["label_bytes"] and rows[0]["image_bytes"] == rows[1]["image_bytes"]
    assert len(list((tmp_path / "a" / "teacher").iterdir())) == 1  # one teacher for all points
    assert len(list((tmp_path / "a" / "synthesize").iterdir())) == 2  # one image set per mode
    assert len(list((tmp_path / "a" / "relabel").iterdir())) == 2  # labels shared across ratios

    [results] = list((tmp_path / "a" / "sweep").glob("*/results.csv"))
    with results.open() as handle:
        written = list(csv.DictReader(handle))
    assert [float(r["test_top1"]) for r in written] == [r["test_top1"] for r in rows]

    again = sweep(base=base, grid=grid)
    assert [r["evaluate_state"] for r in again] == ["Cached"] * 4
    assert [r["test_top1"] for r in again] == [r["test_top1"] for r in rows]

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sweep-results"])))
    assert artifacts and artifacts[0].type == "table"
