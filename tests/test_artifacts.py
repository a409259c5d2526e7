"""Artifact identity and the artifact tree: fingerprints, manifests, interrupted writes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from flows.config import resolve_config
from storage.artifacts import ArtifactError, ArtifactRef, ArtifactStore
from tasks.stages.stats import StatsRequest
from tasks.stages.teacher import teacher_request
from tests.file_trees import tree
from tests.tiny_artifacts import identity

FINGERPRINT_SCRIPT = """
import json
import sys
from flows.config import resolve_config
from flows.pipeline import data_identity
from tasks.stages.teacher import teacher_request
for overrides in json.loads(sys.argv[1]):
    config = resolve_config(preset="ci_tiny", overrides=overrides)
    print(teacher_request(data=config.data, teacher=config.teacher, seed=config.runtime.seed,
                          data_identity=data_identity(config, "teacher")).fingerprint())
"""
OVERRIDE_SETS = ((), ("runtime.seed=0",), ("runtime.device=cpu", "runtime.artifact_root=/elsewhere"))


@pytest.fixture(scope="module")
def fingerprints_in_a_new_process() -> dict[tuple[str, ...], str]:
    """The ci_tiny teacher fingerprint under each of OVERRIDE_SETS, computed by one other Python process."""
    out = subprocess.run([sys.executable, "-c", FINGERPRINT_SCRIPT, json.dumps(OVERRIDE_SETS)],
                         capture_output=True, text=True, check=True)
    lines = out.stdout.split()
    assert len(lines) == len(OVERRIDE_SETS), out.stdout
    return dict(zip(OVERRIDE_SETS, lines))


@pytest.mark.slow
def test_same_config_gives_same_fingerprint_across_processes(fingerprints_in_a_new_process):
    config = resolve_config(preset="ci_tiny")
    here = teacher_request(data=config.data, teacher=config.teacher, seed=0, data_identity=identity(config, "train", "val")).fingerprint()
    assert fingerprints_in_a_new_process[()] == here
    assert fingerprints_in_a_new_process[("runtime.seed=0",)] == here


@pytest.mark.slow
def test_device_and_root_do_not_change_the_fingerprint(fingerprints_in_a_new_process):
    assert fingerprints_in_a_new_process[("runtime.device=cpu", "runtime.artifact_root=/elsewhere")] == (
        fingerprints_in_a_new_process[()]
    )


@pytest.mark.parametrize(
    "override",
    ["teacher.epochs=2", "teacher.lr=0.1", "teacher.augment.flip=false", "data.train_per_class=199", "runtime.seed=1"],
)
def test_any_relevant_change_gives_a_new_fingerprint(override):
    base = resolve_config(preset="ci_tiny")
    changed = resolve_config(preset="ci_tiny", overrides=[override])
    fp = lambda c: teacher_request(data=c.data, teacher=c.teacher, seed=c.runtime.seed, data_identity=identity(c, "train", "val")).fingerprint()  # noqa: E731
    assert fp(changed) != fp(base)


def test_input_fingerprints_enter_the_fingerprint():
    config = resolve_config(preset="ci_tiny")
    requests = [
        StatsRequest(data=config.data, data_identity=identity(config), stats=config.stats, seed=0, inputs={"teacher": ArtifactRef(stage="teacher", fingerprint=fp)})
        for fp in ("a" * 32, "b" * 32)
    ]
    assert requests[0].fingerprint() != requests[1].fingerprint()


def test_manifest_records_stage_config_inputs_metrics_bytes_seconds(tmp_path):
    config = resolve_config(preset="ci_tiny")
    request = teacher_request(data=config.data, teacher=config.teacher, seed=0, data_identity=identity(config, "train", "val"))
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


def test_leftovers_of_writes_killed_mid_way_are_not_sealed_into_the_artifact(tmp_path):
    config = resolve_config(preset="ci_tiny")
    request = teacher_request(data=config.data, teacher=config.teacher, seed=0, data_identity=identity(config, "train", "val"))
    store, ref = ArtifactStore(tmp_path), request.ref()
    store.write_bytes(ref, "model.pt", b"x" * 1000)
    folder = tmp_path / "teacher" / ref.fingerprint
    (folder / "model.pt.partial-0badc0de").write_bytes(b"ours, cut short")
    (folder / "labels.zarr" / "logits" / "c" / "7" / "0").mkdir(parents=True)  # zarr's: <chunk>.<uuid hex>.partial
    (folder / "labels.zarr" / "logits" / "c" / "7" / "0" / f"0.{'ab' * 16}.partial").write_bytes(b"zarr's, cut short")
    store.write_manifest(ref, request, metrics={}, seconds=1.0)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["model.pt"] and manifest["bytes"] == 1000
    assert not list(folder.rglob("*.partial*"))


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
import logging
import sys
from flows.config import resolve_config
from flows.pipeline import data_identity
from tasks.stages.teacher import teacher_request, teacher_task
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
config = resolve_config(preset="ci_tiny", overrides=sys.argv[2:], artifact_root=sys.argv[1])
teacher_task.fn(teacher_request(data=config.data, teacher=config.teacher, seed=config.runtime.seed,
                                data_identity=data_identity(config, "teacher")), config.runtime)
"""
# Four short epochs (500 images, four steps each): the kill lands with three still to train.
TRAINING = ["teacher.epochs=4", "data.train_per_class=50"]


def _kill_after_first_epoch(root) -> str:
    """Run the teacher stage in a child process; SIGKILL it when it reports its first epoch; its output."""
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(root), *TRAINING],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("teacher 1/4 "):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return "".join(lines)


@pytest.mark.slow
def test_a_teacher_killed_mid_training_reruns_to_the_bytes_of_an_uninterrupted_run(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    output = _kill_after_first_epoch(killed)
    assert "teacher 1/4 train loss" in output, output[-3000:]
    config = resolve_config(preset="ci_tiny", overrides=TRAINING, artifact_root=str(killed))
    request = teacher_request(data=config.data, teacher=config.teacher, seed=config.runtime.seed, data_identity=identity(config, "train", "val"))
    store, ref = ArtifactStore(killed), request.ref()
    assert f"building {ref}" in output  # the child built this very request
    assert not store.is_complete(ref) and not store.exists(ref, "model.pt"), "the kill should land mid-training"

    from tasks.stages.teacher import teacher_task

    assert teacher_task.fn(request, config.runtime) == ref  # the same request, run again on the killed root
    assert store.is_complete(ref)
    uninterrupted = config.runtime.model_copy(update={"artifact_root": str(clean)})
    assert teacher_task.fn(request, uninterrupted) == ref
    assert tree(killed / ref.stage / ref.fingerprint) == tree(clean / ref.stage / ref.fingerprint)
