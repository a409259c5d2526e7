"""Artifact identity and the artifact tree: fingerprints, manifests, interrupted writes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from flows.config import resolve_config
from storage.artifacts import ArtifactError, ArtifactRef, ArtifactStore
from tasks.stats import StatsRequest
from tasks.teacher import teacher_request

FINGERPRINT_SCRIPT = """
import sys
from flows.config import resolve_config
from tasks.teacher import teacher_request
config = resolve_config(preset="ci_tiny", overrides=sys.argv[1:])
print(teacher_request(data=config.data, teacher=config.teacher, seed=config.runtime.seed).fingerprint())
"""


def _teacher_fingerprint_in_new_process(*overrides: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", FINGERPRINT_SCRIPT, *overrides], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_same_config_gives_same_fingerprint_across_processes():
    config = resolve_config(preset="ci_tiny")
    here = teacher_request(data=config.data, teacher=config.teacher, seed=0).fingerprint()
    assert _teacher_fingerprint_in_new_process() == here
    assert _teacher_fingerprint_in_new_process("runtime.seed=0") == here


def test_device_and_root_do_not_change_the_fingerprint():
    assert _teacher_fingerprint_in_new_process("runtime.device=cpu", "runtime.artifact_root=/elsewhere") == (
        _teacher_fingerprint_in_new_process()
    )


@pytest.mark.parametrize(
    "override",
    ["teacher.epochs=2", "teacher.lr=0.1", "teacher.augment.flip=false", "data.train_per_class=199", "runtime.seed=1"],
)
def test_any_relevant_change_gives_a_new_fingerprint(override):
    base = resolve_config(preset="ci_tiny")
    changed = resolve_config(preset="ci_tiny", overrides=[override])
    fp = lambda c: teacher_request(data=c.data, teacher=c.teacher, seed=c.runtime.seed).fingerprint()  # noqa: E731
    assert fp(changed) != fp(base)


def test_input_fingerprints_enter_the_fingerprint():
    config = resolve_config(preset="ci_tiny")
    requests = [
        StatsRequest(data=config.data, stats=config.stats, seed=0, inputs={"teacher": ArtifactRef(stage="teacher", fingerprint=fp)})
        for fp in ("a" * 32, "b" * 32)
    ]
    assert requests[0].fingerprint() != requests[1].fingerprint()


def test_manifest_records_stage_config_inputs_metrics_bytes_seconds(tmp_path):
    config = resolve_config(preset="ci_tiny")
    request = teacher_request(data=config.data, teacher=config.teacher, seed=0)
    store, ref = ArtifactStore(tmp_path), request.ref()
    store.write_bytes(ref, "model.pt", b"x" * 1000)
    assert not store.is_complete(ref)
    store.write_manifest(ref, request, metrics={"test_top1": 0.5}, seconds=1.25)
    manifest = json.loads((tmp_path / "teacher" / ref.fingerprint / "manifest.json").read_text())
    assert manifest["stage"] == "teacher" and manifest["fingerprint"] == ref.fingerprint
    assert manifest["config"]["teacher"]["epochs"] == config.teacher.epochs
    assert manifest["inputs"] == {} and manifest["metrics"] == {"test_top1": 0.5}
    assert manifest["bytes"] == 1000 and manifest["seconds"] == 1.25
    assert store.is_complete(ref)


def test_store_works_on_a_non_local_fsspec_root():
    store = ArtifactStore("memory://distillery-test")
    ref = ArtifactRef(stage="teacher", fingerprint="f" * 32)
    store.write_bytes(ref, "model.pt", b"weights")
    assert store.read_bytes(ref, "model.pt") == b"weights"
    assert store.size_bytes(ref) == len(b"weights")


def test_a_failed_write_leaves_no_file_under_its_final_name(tmp_path, monkeypatch):
    store, ref = ArtifactStore(tmp_path), ArtifactRef(stage="teacher", fingerprint="0" * 32)

    class Boom(Exception):
        pass

    def failing_mv(*_args, **_kwargs):
        raise Boom

    monkeypatch.setattr(store.fs, "mv", failing_mv)
    with pytest.raises(Boom):
        store.write_bytes(ref, "manifest.json", b"{}")
    assert not store.is_complete(ref)


def test_missing_file_error_names_artifact_and_fix(tmp_path):
    store, ref = ArtifactStore(tmp_path), ArtifactRef(stage="stats", fingerprint="1" * 32)
    with pytest.raises(ArtifactError, match=r"class_bn_stats.pt is missing from artifact stats/1+ .*delete .* and rerun"):
        store.read_bytes(ref, "class_bn_stats.pt")


KILL_SCRIPT = """
import sys
from flows.config import resolve_config
from tasks.teacher import teacher_request, teacher_task
config = resolve_config(preset="ci_tiny", overrides=["teacher.epochs=50"], artifact_root=sys.argv[1])
request = teacher_request(data=config.data, teacher=config.teacher, seed=config.runtime.seed)
print(request.ref().fingerprint, flush=True)
teacher_task.fn(request, config.runtime)
"""


def test_a_killed_stage_leaves_no_manifest_and_reruns_to_completion(tmp_path):
    root = tmp_path / "artifacts"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(root)], stdout=subprocess.PIPE, text=True)
    fingerprint = proc.stdout.readline().strip()
    time.sleep(3)  # well inside 50 epochs of training
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store, ref = ArtifactStore(root), ArtifactRef(stage="teacher", fingerprint=fingerprint)
    assert not store.is_complete(ref)
    config = resolve_config(preset="ci_tiny", artifact_root=str(root))
    from tasks.teacher import teacher_task

    short = teacher_request(data=config.data, teacher=config.teacher, seed=0)
    assert teacher_task.fn(short, config.runtime) == short.ref()
    assert store.is_complete(short.ref()) and not store.is_complete(ref)
