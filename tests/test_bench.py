"""The bench flow on slices: every ratio measured and written, the formats' stores side by side.

Figures here say nothing about speed (the suite shares the machine); they must exist, be
positive, say "met" exactly when they fall on their goal's side of the bound, and be written
where the bench says. The speed goals are judged by `distillery bench`.
"""

from __future__ import annotations

import pytest

from flows.bench import bench, row
from flows.config import resolve_config
from tests.conftest import needs_fashion_mnist

GOALS = {
    "Prefect pipeline / plain functions (wall)": "<=1.05",
    "cached rerun / cold run (wall)": "<=0.03",
    "ci_tiny on local S3 / local folder (wall)": "<=1.3",
    "relabel / bare teacher forward (samples/s)": ">=0.90",
    "student from store / from memory (steps/s)": ">=0.90",
    "student channels-last / NCHW weights (steps/s)": ">=1.3",
    "synthesis 2 Dask workers / 1 (speed-up)": ">=1.7",
    "ImageFolder decode 2 workers / 1 (images/s)": ">=1.7",
    "ImageFolder listing identity, 60,000 files (s)": "<=3",
}


@pytest.mark.parametrize("figure, goal, met", [
    (1.04, "<=1.05", "yes"), (1.06, "<=1.05", "no"), (1.05, "<=1.05", "yes"),
    (0.95, ">=0.90", "yes"), (0.85, ">=0.90", "no"), (1.7, ">=1.7", "yes"), (0.5, ">=1.7", "no"),
])
def test_a_goal_is_met_only_on_its_side_of_the_bound(figure, goal, met):
    measured = row("a ratio", figure, goal, "detail")
    assert (measured["met"], measured["goal"], measured["figure"]) == (met, goal, figure)


@needs_fashion_mnist
@pytest.mark.slow
def test_bench_measures_every_ratio_and_each_label_format(prefect_server, tmp_path):
    config = resolve_config(preset="ci_tiny", artifact_root=str(tmp_path / "bench"))
    rows = bench(config=config, passes=1)
    ratios = {r["measure"]: r for r in rows if "measure" in r}
    assert {measure: r["goal"] for measure, r in ratios.items()} == GOALS
    for measure, r in ratios.items():
        assert r["figure"] > 0, measure
        if abs(r["figure"] - float(r["goal"][2:])) > 1e-3:  # the figure is shown rounded to 3 places
            assert r["met"] == row(measure, r["figure"], r["goal"], r["detail"])["met"], (measure, r)  # the rule tested above
    units = {n: sorted((tmp_path / "bench" / n / "synthesize").glob("*/units/*.pt")) for n in ("prefect", "dask1", "dask2")}
    assert len(units["prefect"]) == 10 and [p.read_bytes() for p in units["dask2"]] == [p.read_bytes() for p in units["prefect"]]
    assert ratios["cached rerun / cold run (wall)"]["figure"] < 1
    formats = {r["format"]: r for r in rows if "format" in r}
    assert set(formats) == {"fp16+boxes", "fp16+seed", "topk3+seed", "prob8+seed", "logit8+stream", "logp8+stream"}
    raw = {name: r["raw bytes/step"] for name, r in formats.items()}  # on disk, metadata dominates tiny stores
    assert raw["prob8+seed"] < raw["topk3+seed"] < raw["fp16+seed"] < raw["fp16+boxes"]
    assert raw["logp8+stream"] < raw["prob8+seed"] and raw["logit8+stream"] < raw["fp16+seed"]  # no image indices kept
    assert all(r["bytes/step"] > 0 for r in formats.values())
    assert all(r["store MB/s"] > 0 and r["raw .npy MB/s"] > 0 for r in formats.values())
    table = (tmp_path / "bench" / "bench.md").read_text()
    assert "relabel / bare teacher forward" in table and "prob8+seed" in table
