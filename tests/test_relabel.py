"""Relabel and prune on real Fashion-MNIST slices: the stream, replay, resume, damage, pruning."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.config import resolve_config
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.file_names import IMAGES, LABELS
from storage.image_store import read_image_store
from storage.softlabels import SoftLabelReader, SoftLabelStoreError
from tasks.data import normalization
from tasks.labels.stream import StreamGeometry, apply_augmentation, kept_step_count, stored_augmentation, stored_images
from tasks.labels.replay import training_schedule
from tasks.stages.prune import PruneError, PruneRequest, prune_task
from tasks.stages.relabel import RelabelError, relabel_request, relabel_task
from tasks.models import load_teacher
from tests.file_trees import tree
from tests.conftest import kill_when, needs_fashion_mnist

pytestmark = needs_fashion_mnist
# 10 real images per class (random_real: no synthesis cost), 8 per step: 13 steps an epoch, the last short.
BASE = ["synthesis.mode=random_real", "synthesis.ipc=10", "relabel.batch_size=8", "relabel.chunk_steps=4"]


def _config(root: Path, *overrides: str):
    return resolve_config(preset="ci_tiny", artifact_root=str(root), overrides=[*BASE, *overrides])


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, tiny_artifacts) -> tuple[Path, ArtifactRef, ArtifactRef]:
    """The session's ci_tiny teacher and a random-real image store, copied into each test's root."""
    root = tmp_path_factory.mktemp("upstream")
    teacher, images = tiny_artifacts.copy_into(root, *BASE, until="synthesize")
    return root, teacher, images


def _root(upstream, tmp_path: Path, name: str = "a") -> Path:
    shutil.copytree(upstream[0], tmp_path / name)
    return tmp_path / name


def _relabel(config, upstream):
    request = relabel_request(data=config.data, relabel=config.relabel, prune_ratio=config.prune.ratio,
                              prune_rule=config.prune.rule, seed=0, teacher=upstream[1], images=upstream[2])
    return relabel_task.fn(request, config.runtime)


def test_every_epoch_labels_each_image_once_and_pads_the_short_step(upstream, tmp_path):
    config = _config(_root(upstream, tmp_path))
    store = ArtifactStore(config.runtime.artifact_root)
    reader = SoftLabelReader(store.url(_relabel(config, upstream), LABELS))
    assert reader.num_steps == 4 * 13 and reader.attrs["steps_per_epoch"] == 13
    for epoch in range(4):
        seen = np.concatenate([reader.step(epoch * 13 + j).image_index for j in range(13)])
        assert sorted(seen.tolist()) == list(range(100))
    last = reader.step(12)
    assert len(last.image_index) == 4 and last.logits.shape == (4, 10) and last.crop.shape == (4, 4)
    assert (reader.row("image_index", 12)[4:] == -1).all()
    assert [reader.step(s).step_id for s in range(reader.num_steps)] == list(range(52))


@pytest.mark.parametrize("augmentation", ["boxes", "seed", "stream"])
def test_replaying_stored_augmentation_reproduces_the_stored_logits(upstream, tmp_path, augmentation):
    config = _config(_root(upstream, tmp_path), f"relabel.augmentation={augmentation}")
    store = ArtifactStore(config.runtime.artifact_root)
    reader = SoftLabelReader(store.url(_relabel(config, upstream), LABELS))
    model = load_teacher(store, upstream[1], torch.device("cpu"))
    images_u8, _, _ = read_image_store(store.url(upstream[2], IMAGES))
    images = normalization(config.data).to_input(torch.from_numpy(images_u8))
    geometry = StreamGeometry(100, 8, 4)
    assert ("image_index" in reader.arrays) == (augmentation != "stream")  # stream: the step id and labels alone
    for step_index in [12, *np.random.default_rng(0).choice(reader.num_steps, 6, replace=False)]:  # 12: a short step
        step = reader.step(int(step_index))
        chosen = stored_images(step, seed=0, geometry=geometry)
        aug = stored_augmentation(step, n=len(chosen), seed=0, image_size=28,
                                  crop_scale_min=config.data.augment.crop_scale_min, cutmix=True)
        assert aug.mix_perm is not None
        with torch.no_grad():
            replayed = model(apply_augmentation(images[chosen], aug)).numpy()
        np.testing.assert_allclose(step.logits[: len(chosen)], replayed, rtol=2e-3, atol=2e-3)  # fp16 storage


def test_label_formats_decode_close_to_the_teacher(upstream, tmp_path):
    root = _root(upstream, tmp_path)
    store = ArtifactStore(str(root))
    full = SoftLabelReader(store.url(_relabel(_config(root), upstream), LABELS)).step(5).logits
    top2 = SoftLabelReader(store.url(_relabel(_config(root, "relabel.label_format=topk", "relabel.topk=2"), upstream), LABELS)).step(5).logits
    np.testing.assert_array_equal(top2.argmax(1), full.argmax(1))
    np.testing.assert_allclose(np.sort(top2, 1)[:, -2:], np.sort(full, 1)[:, -2:], atol=1e-2)
    prob8 = SoftLabelReader(store.url(_relabel(_config(root, "relabel.label_format=prob8"), upstream), LABELS)).step(5).logits
    soft = lambda z: torch.softmax(torch.from_numpy(z) / 20.0, 1).numpy()  # noqa: E731
    assert np.abs(soft(prob8) - soft(full)).max() < 4 / 255
    logit8 = SoftLabelReader(store.url(_relabel(_config(root, "relabel.label_format=logit8", "relabel.augmentation=stream"),
                                                upstream), LABELS)).step(5).logits
    span = (full.max(1, keepdims=True) - full).max()  # the step's largest distance below a row's maximum
    np.testing.assert_allclose(logit8, full - full.max(1, keepdims=True), atol=span / 510 + 2e-2)  # + fp16 rounding
    logp8 = SoftLabelReader(store.url(_relabel(_config(root, "relabel.label_format=logp8"), upstream), LABELS)).step(5).logits
    np.testing.assert_allclose(logp8, full - full.max(1, keepdims=True), atol=20.0 / 100 + 2e-2)  # half a level at T = 20
    with pytest.raises(RelabelError, match="relabel.topk=10 must be below the 10 classes"):
        _relabel(_config(root, "relabel.label_format=topk", "relabel.topk=10"), upstream)


def test_a_store_from_another_teacher_is_refused_naming_both(upstream, tmp_path):
    config = _config(_root(upstream, tmp_path))
    url = ArtifactStore(config.runtime.artifact_root).url(_relabel(config, upstream), LABELS)
    with pytest.raises(SoftLabelStoreError, match=f"made from teacher {upstream[1].fingerprint}, but this run uses teacher f00d"):
        SoftLabelReader(url, expect={"teacher": "f00d"})
    SoftLabelReader(url, expect={"teacher": upstream[1].fingerprint, "images": upstream[2].fingerprint})


def test_flipped_bytes_in_one_chunk_name_the_array_and_the_step(upstream, tmp_path):
    config = _config(_root(upstream, tmp_path))
    url = ArtifactStore(config.runtime.artifact_root).url(_relabel(config, upstream), LABELS)
    chunk = Path(url, "logits", "c", "2", "0", "0")  # steps 8-11
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    reader = SoftLabelReader(url)
    reader.step(3)  # other chunks still read
    with pytest.raises(SoftLabelStoreError, match=r"array 'logits' is damaged at step 9 .*and rerun the same command to rebuild it"):
        reader.step(9)


def test_a_saved_chunk_damaged_before_the_stage_is_sealed_is_built_again(upstream, tmp_path):
    config = _config(_root(upstream, tmp_path))
    ref = _relabel(config, upstream)
    folder = Path(config.runtime.artifact_root, "relabel", ref.fingerprint)
    whole = tree(folder / LABELS)
    (folder / "manifest.json").unlink()  # unfinished again, as a kill leaves it: chunk 2 is marked done
    chunk = folder / LABELS / "logits" / "c" / "2" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))

    assert _relabel(config, upstream) == ref
    assert tree(folder / LABELS) == whole  # chunk 2 built again, not sealed into the manifest as it was
    SoftLabelReader(str(folder / LABELS)).step(9)


KILL_SCRIPT = """
import sys
from flows.config import resolve_config
from storage.artifacts import ArtifactRef
from tasks.stages.relabel import relabel_request, relabel_task
config = resolve_config(preset="ci_tiny", artifact_root=sys.argv[1], overrides=sys.argv[4:])
request = relabel_request(data=config.data, relabel=config.relabel, prune_ratio=0.0, prune_rule="prefix", seed=0,
                          teacher=ArtifactRef(stage="teacher", fingerprint=sys.argv[2]),
                          images=ArtifactRef(stage="synthesize", fingerprint=sys.argv[3]))
print(request.ref().fingerprint, flush=True)
relabel_task.fn(request, config.runtime)
"""


@pytest.mark.slow
def test_a_killed_relabel_resumes_to_the_same_bytes(upstream, tmp_path):
    overrides = [*BASE, "relabel.epochs=40", "relabel.chunk_steps=13"]  # 40 chunks of one epoch
    killed_root, clean_root = _root(upstream, tmp_path, "killed"), _root(upstream, tmp_path, "clean")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(killed_root), upstream[1].fingerprint, upstream[2].fingerprint, *overrides],
        stdout=subprocess.PIPE, text=True,
    )
    marks = killed_root / "relabel" / proc.stdout.readline().strip() / LABELS / "complete" / "c"
    done_before_kill = kill_when(proc, lambda: len(list(marks.glob("*"))), at_least=5)
    assert 5 <= done_before_kill < 40, "the kill should land part-way through the 40 chunks"
    assert not (marks.parents[1] / "manifest.json").exists()

    resumed = _relabel(resolve_config(preset="ci_tiny", artifact_root=str(killed_root), overrides=overrides), upstream)
    clean = _relabel(resolve_config(preset="ci_tiny", artifact_root=str(clean_root), overrides=overrides), upstream)
    assert resumed == clean
    killed_files = tree(killed_root / "relabel" / resumed.fingerprint / LABELS)
    clean_files = tree(clean_root / "relabel" / clean.fingerprint / LABELS)
    assert killed_files.keys() == clean_files.keys() and killed_files == clean_files


@pytest.mark.parametrize("rule", ["prefix", "uniform", "epoch"])
def test_prune_writes_a_real_smaller_store_of_the_kept_steps(upstream, tmp_path, rule):
    config = _config(_root(upstream, tmp_path), "relabel.epochs=20")
    store = ArtifactStore(config.runtime.artifact_root)
    source_ref = _relabel(config, upstream)
    request = PruneRequest(prune={"ratio": 0.9, "rule": rule}, seed=0, inputs={"labels": source_ref})
    pruned_ref = prune_task.fn(request, config.runtime)
    source = SoftLabelReader(store.url(source_ref, LABELS))
    pruned = SoftLabelReader(store.url(pruned_ref, LABELS))
    ids = [pruned.step(s).step_id for s in range(pruned.num_steps)]
    assert pruned.num_steps == (26 if rule != "epoch" else 2 * 13)  # floor(0.1 * 260) steps; floor(0.1 * 20) epochs
    assert ids == sorted(set(ids))
    if rule == "prefix":
        assert ids == list(range(26))
    if rule == "epoch":
        assert {i // 13 for i in ids}.__len__() == 2 and len(ids) == 26
    for row, step_id in enumerate(ids):
        np.testing.assert_array_equal(pruned.step(row).logits, source.step(step_id).logits)
        np.testing.assert_array_equal(pruned.step(row).crop, source.step(step_id).crop)
    manifest = store.read_manifest(pruned_ref)
    assert pruned.attrs["pruned_from"] == source_ref.fingerprint and pruned.attrs["prune_rule"] == rule
    assert manifest["bytes"] < store.read_manifest(source_ref)["bytes"] / 3
    assert manifest["metrics"]["kept_fraction"] == pytest.approx(0.1)
    for finished in (source, pruned):  # no consolidated copy of the metadata: it would add ~9 KB to each store
        assert finished.group.metadata.consolidated_metadata is None


def test_generating_only_the_kept_prefix_matches_the_full_stream(upstream, tmp_path):
    root = _root(upstream, tmp_path)
    store = ArtifactStore(str(root))
    full = SoftLabelReader(store.url(_relabel(_config(root, "relabel.epochs=20"), upstream), LABELS))
    kept_config = _config(root, "relabel.epochs=20", "relabel.generate=kept", "prune.ratio=0.9")
    kept_ref = _relabel(kept_config, upstream)
    kept = SoftLabelReader(store.url(kept_ref, LABELS))
    assert kept.num_steps == 26
    for s in (0, 13, 25):
        np.testing.assert_array_equal(kept.step(s).logits, full.step(s).logits)
    pruned = prune_task.fn(PruneRequest(prune=kept_config.prune, seed=0, inputs={"labels": kept_ref}), kept_config.runtime)
    assert SoftLabelReader(store.url(pruned, LABELS)).num_steps == 26
    uniform = PruneRequest(prune={"ratio": 0.9, "rule": "uniform"}, seed=0, inputs={"labels": kept_ref})
    with pytest.raises(PruneError, match="does not hold .*set relabel.generate=all"):
        prune_task.fn(uniform, kept_config.runtime)


def test_training_schedule_draws_each_epoch_from_the_kept_pool_with_replacement():
    draw = lambda seed: training_schedule(8, steps_per_epoch=13, epochs=300, seed=seed, stream_steps=3900)  # noqa: E731
    schedule = draw(0)
    assert schedule.shape == (300, 13) and schedule.min() == 0 and schedule.max() == 7
    assert any(len(set(epoch)) < 13 for epoch in schedule)  # 13 draws from 8: repeats
    np.testing.assert_array_equal(schedule, draw(0))
    assert not np.array_equal(schedule, draw(1))


def test_an_unpruned_store_is_replayed_as_stored_every_step_once():
    schedule = training_schedule(3900, steps_per_epoch=13, epochs=300, seed=0, stream_steps=3900)
    np.testing.assert_array_equal(schedule.reshape(-1), np.arange(3900))  # stream order, each step once
    longer = training_schedule(26, steps_per_epoch=13, epochs=4, seed=0, stream_steps=26)
    np.testing.assert_array_equal(longer.reshape(-1), np.r_[np.arange(26), np.arange(26)])  # then again from the start
    geometry = StreamGeometry(num_images=100, batch_size=8, epochs=300)
    assert geometry.steps_per_epoch == 13 and geometry.total_steps == 3900


def test_the_pruning_factor_is_exact():
    assert kept_step_count(0.975, 1200) == 30  # 40x of 1200 steps: 30, so the factor is exactly 40
    assert kept_step_count(0.975, 300) == 7  # floor(7.5): 42.9x, never fewer than asked for (ceil gave 37.5x)
    assert kept_step_count(0.9, 260) == 26 and kept_step_count(0.95, 1200) == 60
    assert kept_step_count(0.99, 50) == 1  # at least one step


def test_relabel_crops_follow_the_data_augmentation_unless_overridden(upstream, tmp_path):
    root = _root(upstream, tmp_path)
    store = ArtifactStore(str(root))
    shared = _relabel(_config(root, "relabel.epochs=1", "data.augment.crop_scale_min=0.7"), upstream)
    assert SoftLabelReader(store.url(shared, LABELS)).attrs["crop_scale_min"] == 0.7
    own = _relabel(_config(root, "relabel.epochs=1", "data.augment.crop_scale_min=0.7", "relabel.crop_scale_min=0.3"),
                   upstream)
    assert SoftLabelReader(store.url(own, LABELS)).attrs["crop_scale_min"] == 0.3
