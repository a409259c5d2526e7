"""The run history: one row per run through evaluate, kept in the artifact root, published to the
dashboard with a plot, and the regression guard that fails a run falling below the previous one."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from flows import history
from flows.config import resolve_config
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.verify import verify_tree
from tasks.data.identity import SplitIdentity
from tests.conftest import needs_fashion_mnist

TRAIN, TEST = SplitIdentity(digest="a" * 32, images=60000), SplitIdentity(digest="b" * 32, images=10000)


def _student(compression: float, top1: float, std: float = 0.01) -> SimpleNamespace:
    metrics = {"label_compression": compression, "label_steps": 2400 / compression, "test_top1": top1,
               "test_top1_std": std, "labels_store_bytes": 1000.0 * 40 / compression, "teacher_test_top1": 0.9}
    return SimpleNamespace(ref=ArtifactRef(stage="evaluate", fingerprint="e" * 32), metrics=metrics)


def _row(config, top1s=(0.83, 0.81), identity=None, previous=None) -> dict:
    outcomes = [_student(1.0, top1s[0]), _student(40.0, top1s[1])]
    return history.history_row(config, identity or {"train": TRAIN, "test": TEST}, outcomes, previous=previous,
                               seconds=12.3, rebuilt=["evaluate"])


def test_a_row_names_the_data_the_students_and_what_changed_since_the_last_run():
    config = resolve_config(preset="ci_tiny")
    first = _row(config)
    assert first["data"] == {"train": TRAIN.model_dump(), "test": TEST.model_dump()} and first["data_changes"] == []
    assert [(s["labels"], s["test_top1"]) for s in first["students"]] == [("1x", 0.83), ("40x", 0.81)]
    assert first["teacher_test_top1"] == 0.9 and first["rebuilt"] == ["evaluate"]
    more = SplitIdentity(digest="c" * 32, images=60001)
    second = _row(config, identity={"train": more, "test": TEST}, previous=first)
    assert second["data_changes"] == ["train: 60,001 images, digest cccccccc (was aaaaaaaa, 60,000 images)"]
    table = history.table_rows([first, second])
    assert table[0]["data changed"] == second["data_changes"][0] and table[1]["data changed"] == ""  # newest first
    assert table[0]["students 40x"] == "0.8100 ± 0.0100" and table[0]["labels 1x KiB"] == "39.1"


def test_the_guard_fails_only_a_drop_beyond_its_margin_against_the_same_group():
    config = resolve_config(preset="ci_tiny")
    before = _row(config, (0.83, 0.81))
    assert history.regression(_row(config, (0.825, 0.805)), before, 0.01) is None  # within 0.01
    why = history.regression(_row(config, (0.83, 0.79)), before, 0.01)
    assert why and why.startswith("regression against the run of ") and "students 40x 0.7900 < 0.8100 - 0.01" in why
    assert "students 1x" not in why
    assert history.regression(_row(config, (0.5, 0.5)), before, None) is None  # no guard set
    assert history.regression(_row(config, (0.5, 0.5)), None, 0.01) is None  # nothing to compare with


def test_histories_are_keyed_by_deployment_or_by_config_and_root():
    config = resolve_config(preset="ci_tiny", artifact_root="/a")
    assert history.history_key(config, "Fashion MNIST nightly") == "fashion-mnist-nightly"
    other_device = resolve_config(preset="ci_tiny", artifact_root="/a", device="cpu",
                                  overrides=["evaluate.alert_drop=0.02", "runtime.threads=1"])
    assert history.history_key(config, None) == history.history_key(other_device, None)
    assert history.history_key(config, None) != history.history_key(resolve_config(preset="ci_tiny",
                                                                                   artifact_root="/b"), None)
    assert history.history_key(config, None) != history.history_key(resolve_config(preset="fashion_mnist",
                                                                                   artifact_root="/a"), None)


def test_the_alert_setting_never_enters_the_evaluate_fingerprint():
    plain = resolve_config(preset="ci_tiny").evaluate.for_stream(epochs=4, batch_size=8)
    guarded = resolve_config(preset="ci_tiny", overrides=["evaluate.alert_drop=0.01"]).evaluate.for_stream(
        epochs=4, batch_size=8)
    assert plain == guarded


def test_the_plot_is_a_png_of_every_run():
    config = resolve_config(preset="ci_tiny")
    png = history.plot_png([_row(config), _row(config, (0.8, 0.78))])
    assert png.startswith(b"\x89PNG") and len(png) > 5000


@needs_fashion_mnist
@pytest.mark.slow
def test_each_run_adds_a_row_and_a_regression_fails_the_run_after_recording_it(tmp_path, tiny_artifacts,
                                                                              prefect_server):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.distill import distill

    config = resolve_config(preset="ci_tiny", artifact_root=str(tmp_path), overrides=["evaluate.alert_drop=0.01"])
    tiny_artifacts.copy_into(tmp_path)  # every stage built: the runs reuse them
    distill(config=config)
    distill(config=config)
    store, key = ArtifactStore(tmp_path), history.history_key(config, None)
    rows = history.read_history(store, key)
    assert len(rows) == 2 and rows[1]["rebuilt"] == [] and rows[1]["data_changes"] == []
    assert rows[1]["data"]["train"]["images"] == 2000 and rows[1]["data"]["test"]["images"] == 1000
    with get_client(sync_client=True) as client:
        published = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"history-{key}"])))
    latest = max(published, key=lambda artifact: artifact.created)
    assert len(published) == 2 and len(json.loads(latest.data)) == 2  # a version per run; the latest holds both

    better = dict(rows[1], students=[dict(s, test_top1=s["test_top1"] + 0.05) for s in rows[1]["students"]])
    runs = store.path(ArtifactRef(stage="history", fingerprint=key), "runs.jsonl")
    with open(runs, "a") as handle:
        handle.write(json.dumps(better) + "\n")  # a previous run 5 points better than this one
    state = distill(config=config, return_state=True)
    assert state.is_failed() and "regression against the run of" in state.message
    with pytest.raises(history.RegressionAlert, match=r"students 1x .* < .* - 0.01"):
        state.result()
    assert len(history.read_history(store, key)) == 4  # recorded before it failed
    assert {f.status for f in verify_tree(str(tmp_path))} == {"ok"}  # histories are not artifacts to verify
