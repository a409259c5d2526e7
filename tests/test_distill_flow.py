"""The distill flow through a real (temporary) Prefect server: caching, reuse, recompute."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from flows.distill import distill
from storage.artifacts import ArtifactStore
from tasks.data import FASHION_MNIST_CLASSES
from tests.conftest import needs_fashion_mnist

pytestmark = [needs_fashion_mnist, pytest.mark.slow]


def _states(outcomes):
    return {o.ref.stage: o.state for o in outcomes}


def test_rerun_is_cached_and_a_stats_change_recomputes_only_stats(prefect_server, tiny_config):
    first = distill(config=tiny_config, until="stats")
    assert _states(first) == {"teacher": "Completed", "stats": "Completed"}
    store = ArtifactStore(tiny_config.runtime.artifact_root)
    assert all(store.is_complete(o.ref) for o in first)

    assert _states(distill(config=tiny_config, until="stats")) == {"teacher": "Cached", "stats": "Cached"}

    changed = tiny_config.model_copy(update={"stats": tiny_config.stats.model_copy(update={"passes": 2})})
    third = distill(config=changed, until="stats")
    assert _states(third) == {"teacher": "Cached", "stats": "Completed"}
    assert third[0].ref == first[0].ref and third[1].ref != first[1].ref


def test_until_teacher_stops_after_the_teacher(prefect_server, tiny_config):
    assert [o.ref.stage for o in distill(config=tiny_config, until="teacher")] == ["teacher"]


def test_deleted_artifact_is_recomputed_despite_a_prefect_cache_record(prefect_server, tiny_config, tiny_artifacts):
    tiny_artifacts.copy_into(tiny_config.runtime.artifact_root, until="stats")
    first = distill(config=tiny_config, until="stats")  # found on disk; the task runs leave cache records
    shutil.rmtree(first[1].path)
    second = distill(config=tiny_config, until="stats")
    assert _states(second) == {"teacher": "Cached", "stats": "Completed"}
    assert ArtifactStore(tiny_config.runtime.artifact_root).is_complete(second[1].ref)


def test_manifest_on_disk_counts_as_done_without_a_prefect_cache_record(prefect_server, tiny_config, tiny_artifacts):
    # Artifacts made without Prefect elsewhere and copied in (as on another machine sharing the root).
    runtime = tiny_config.runtime
    teacher, stats = tiny_artifacts.copy_into(runtime.artifact_root, until="stats")
    model = Path(ArtifactStore(runtime.artifact_root).path(teacher, "model.pt"))
    written = model.stat().st_mtime_ns
    outcomes = distill(config=tiny_config, until="stats")
    assert [o.ref for o in outcomes] == [teacher, stats]
    assert model.stat().st_mtime_ns == written


def test_synthesis_uses_stats_for_lpld_only_and_a_mode_change_reuses_the_teacher(prefect_server, tiny_config):
    lpld = distill(config=tiny_config, until="synthesize")
    assert _states(lpld) == {"teacher": "Completed", "stats": "Completed", "synthesize": "Completed"}
    sre2l_config = tiny_config.model_copy(update={"synthesis": tiny_config.synthesis.model_copy(update={"mode": "sre2l"})})
    sre2l = distill(config=sre2l_config, until="synthesize")
    assert _states(sre2l) == {"teacher": "Cached", "synthesize": "Completed"}
    assert sre2l[-1].ref != lpld[-1].ref
    assert Path(sre2l[-1].path, "grid.png").is_file()


def test_a_new_prune_ratio_reuses_teacher_images_and_labels(prefect_server, tiny_config):
    def with_prune(ratio: float):
        return tiny_config.model_copy(update={"prune": tiny_config.prune.model_copy(update={"ratio": ratio})})

    first = distill(config=with_prune(0.5), until="prune")
    assert _states(first) == {s: "Completed" for s in ("teacher", "stats", "synthesize", "relabel", "prune")}
    second = distill(config=with_prune(0.75), until="prune")
    assert _states(second) == {"teacher": "Cached", "stats": "Cached", "synthesize": "Cached", "relabel": "Cached",
                               "prune": "Completed"}
    assert second[-1].metrics["steps"] < first[-1].metrics["steps"] < first[-2].metrics["steps"]


def test_cli_runs_the_pipeline_then_reports_it_cached(tmp_path, prefect_server):
    command = [sys.executable, "-m", "flows.cli", "run", "--preset", "ci_tiny", "--artifact-root", str(tmp_path / "a"),
               "--set", "prune.ratio=0.75", "--set", "evaluate.also_unpruned=true"]
    env = {**os.environ, "PREFECT_API_URL": prefect_server}  # the session's server: no temporary one per run
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    for stage in ("teacher", "stats", "synthesize", "relabel", "prune", "evaluate"):
        assert re.search(rf"^{stage} +Completed ", first.stdout, re.M), first.stdout[-3000:]
    # 20 images, batch 8: 3 steps an epoch, 12 in all; 4x keeps 3. Both student sets, unpruned first.
    students = first.stdout.split("students (top-1, mean ± std over seeds):\n")[1].splitlines()[:4]
    assert students[0].split() == ["validation", "test"]
    assert students[1].startswith("  soft labels 1x: 12 stored steps, ") and students[1].count(" ± ") == 2  # val, test
    assert students[2].startswith("  soft labels 4x: 3 stored steps, ")
    assert students[3].startswith("  teacher ") and len(re.findall(r"0\.\d{4}", students[3])) == 2
    second = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    for stage in ("teacher", "stats", "synthesize", "relabel", "prune", "evaluate"):
        assert re.search(rf"^{stage} +Cached ", second.stdout, re.M), second.stdout[-3000:]
    assert len(re.findall(r"^evaluate +Cached ", second.stdout, re.M)) == 2
    assert str(tmp_path / "a" / "teacher") in second.stdout


def test_a_fresh_prefect_home_still_shows_reused_stages_cached(tmp_path, prefect_server, tiny_artifacts):
    """Artifacts on disk but no Prefect cache record (a new machine, a new PREFECT_HOME): each stage
    finds its manifest and must say Cached, not Completed with its old build seconds."""
    tiny_artifacts.copy_into(tmp_path / "a")
    home = tmp_path / "fresh-home"
    home.mkdir()
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_HOME": str(home)}  # no cache records there
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--preset", "ci_tiny", "--artifact-root",
                           str(tmp_path / "a")], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in ("teacher", "stats", "synthesize", "relabel", "evaluate"):
        assert re.search(rf"^{stage} +Cached ", done.stdout, re.M), done.stdout[-3000:]
    assert "Completed" not in done.stdout.split("artifacts:")[0], done.stdout[-3000:]


def test_the_dashboard_grid_names_each_class_beside_its_images_at_a_readable_size(prefect_server, tiny_config,
                                                                                 tiny_artifacts):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    tiny_artifacts.copy_into(tiny_config.runtime.artifact_root)
    run = distill(config=tiny_config, until="synthesize", return_state=True)
    with get_client(sync_client=True) as client:
        [grid] = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["image-grid"]), flow_run_id=ArtifactFilterFlowRunId(any_=[run.state_details.flow_run_id])))
    lines = grid.data.splitlines()
    assert lines[:2] == ["| class | images |", "|---|---|"] and len(lines) == 12  # ci_tiny: 2 images of each of 10
    for line, name in zip(lines[2:], FASHION_MNIST_CLASSES):
        cell = re.fullmatch(rf"\| {re.escape(name)} \| !\[{re.escape(name)}\]\(data:image/png;base64,(\S+)\) \|", line)
        assert cell, line[:120]
        with Image.open(io.BytesIO(base64.b64decode(cell.group(1)))) as tiles:
            assert tiles.height >= 48 and tiles.width >= 2 * 48, tiles.size  # one row of 2 tiles, each >= 48 px


def test_cli_missing_data_set_is_one_message_and_exit_2(tmp_path):
    command = [sys.executable, "-m", "flows.cli", "run", "--set", f"data.root={tmp_path / 'nowhere'}",
               "--artifact-root", str(tmp_path / "a")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert result.stderr.startswith("distillery: data: Fashion-MNIST not found")
    assert "sudo apt-get install dataset-fashion-mnist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "a").exists()
