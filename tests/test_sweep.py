"""The sweep flow: grid parsing, one row per point, reuse of shared artifacts, published results."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from flows.config import ConfigError, grid_points, parse_grid, resolve_config, split_point, with_overrides
from flows.report import report
from flows.report_spec import check_rows_distinct, load_spec
from flows.sweep import points_of
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


@pytest.mark.parametrize("values", ["[0]", "[3, 5]", "[two]"])
def test_a_grids_own_replicates_must_be_one_whole_number(tmp_path, values):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"title: t\npreset: ci_tiny\ngrids:\n  - synthesis.mode: [lpld]\n    replicates: {values}\n")
    with pytest.raises(ConfigError, match=r"a grid's replicates is one whole number from 1 to 100 \(e.g. replicates: \[3\]\)"):
        load_spec(str(spec))


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parents[1] / "deploy" / "reports").glob("*.yaml")))
def test_every_committed_report_spec_loads_and_each_point_is_a_valid_config(name, tmp_path):
    """A committed spec whose knob or value the config no longer takes fails here, not an hour into its sweep."""
    spec = load_spec(name)
    base = spec.base(artifact_root=str(tmp_path))
    points = points_of(spec.grids)
    assert points and spec.title
    check_rows_distinct(spec, base)  # the claims can tell every row they read apart
    for point in points:
        settings, replicates = split_point(point, spec.replicates)
        with_overrides(base, settings)  # ConfigError naming the knob and value the config refuses
        assert 1 <= replicates <= 100


@needs_fashion_mnist
@pytest.mark.slow
def test_a_report_sweeps_its_grids_reuses_shared_stages_and_reruns_cached(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    spec = load_spec("ci_tiny")
    base = spec.base(artifact_root=str(tmp_path / "a"))
    rows = report(spec=spec, base=base, out_dir=str(tmp_path / "docs"), command="distillery report ci_tiny")
    assert [(r["mode"], r["labels"], r["compression"]) for r in rows] == [
        ("lpld", "soft", 1.0), ("lpld", "soft", 4.0), ("random_real", "soft", 1.0), ("random_real", "soft", 4.0),
        ("lpld", "hard", 0.0), ("random_real", "hard", 0.0), ("full", "hard", 0.0)]
    assert all(0 < r["test_top1"] <= 1 and 0 < r["val_top1"] <= 1 and r["evaluate_state"] == "Completed"
               and r["student_steps"] == 6 for r in rows[:-1])
    assert all(r["replicates"] == 2 and len(r["test_runs"]) == len(r["val_runs"]) == 2 and r["teacher"] == "shared"
               for r in rows[:-1])
    assert rows[-1]["replicates"] == 1 and len(rows[-1]["test_runs"]) == 1  # its grid's own replicates: [1]
    assert rows[1]["label_bytes"] < rows[0]["label_bytes"] and rows[0]["image_bytes"] == rows[1]["image_bytes"]
    assert rows[-1]["image_bytes"] == 0 and rows[-1]["ipc"] is None  # the full-data reference needs no images
    root = tmp_path / "a"
    assert len(list((root / "teacher").iterdir())) == 1  # one teacher for all points and replicates
    assert len(list((root / "synthesize").iterdir())) == 4  # an image set per mode and replicate
    assert len(list((root / "relabel").iterdir())) == 4  # labels shared across ratios, one stream per replicate
    assert len(list((root / "evaluate").iterdir())) == 13

    [results] = list(root.glob("sweep/*/results.csv"))
    with results.open() as handle:
        assert [float(r["test_top1"]) for r in csv.DictReader(handle)] == [r["test_top1"] for r in rows]
    docs = tmp_path / "docs"
    text = (docs / "results.md").read_text()
    assert "Regenerate with `distillery report ci_tiny`" in text and "n/a (the sweep has no lpld and sre2l" in text
    assert "Every point is 2 replicates of the whole pipeline unless its grid says otherwise (column `replicates`)" in text
    assert "95 % CI [" in text  # (d) and (e) are decided on the two replicates
    assert "| lpld | 2 | " in text and "- first run:" in text
    assert (docs / "results-accuracy-vs-label-bytes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (docs / "grids").iterdir()) == ["lpld-ipc2.png", "random_real-ipc2.png"]

    again = report(spec=spec, base=base, out_dir=str(tmp_path / "docs"), command="distillery report ci_tiny")
    assert [r["evaluate_state"] for r in again] == ["Cached"] * 7
    assert [r["test_top1"] for r in again] == [r["test_top1"] for r in rows]
    assert "0 stages computed" in (docs / "results.md").read_text()

    with get_client(sync_client=True) as client:
        for key, kind in (("sweep-results", "table"), ("results-report", "markdown")):
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            assert artifacts and artifacts[0].type == kind


@needs_fashion_mnist
@pytest.mark.slow
def test_the_sweep_command_says_where_its_tables_are(prefect_server, tiny_artifacts, tmp_path, capsys):
    from flows.cli import main

    root = tmp_path / "a"
    tiny_artifacts.copy_into(root)  # the prune.ratio=0 point, built
    assert main(["sweep", "--preset", "ci_tiny", "--artifact-root", str(root), "--grid", "prune.ratio=0,0.5"]) == 0
    [folder] = (root / "sweep").iterdir()
    assert f"tables in {folder}/results.md (every column: results.csv)" in capsys.readouterr().out
    assert (folder / "results.md").is_file() and len((folder / "results.csv").read_text().splitlines()) == 3
