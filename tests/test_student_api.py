"""The public student API (tasks/labels/replay.py) on real ci_tiny stores: the replayed batches are
what the teacher labelled, epochs are drawn as evaluate draws them, an export replays like the
artifact store, evaluate trains on exactly these steps, and the docs' student loop runs as written."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from storage.artifacts import ArtifactError, ArtifactStore
from storage.file_names import IMAGES, LABELS
from storage.image_store import read_image_store
from storage.softlabels import SoftLabelReader, SoftLabelStoreError
from tasks.data import normalization
from tasks.export import write_export
from tasks.labels import ReplayedSteps
from tasks.models import create_model, load_teacher
from tasks.stages.evaluate import create_optimizer, soft_label_loss, student_lr, train_student
from tests.conftest import needs_fashion_mnist

pytestmark = needs_fashion_mnist
DOCS = Path(__file__).resolve().parents[1] / "docs" / "your-own-data.md"
PRUNED = ["prune.ratio=0.5"]  # 12 stored steps (20 images, batch 8, 4 epochs), 6 kept


class Run:
    """A finished ci_tiny run (the session's build, copied): its config, artifact refs by stage, and
    the evaluate-path inputs."""

    def __init__(self, tiny_artifacts, root: Path, overrides: list[str]):
        self.config = tiny_artifacts.config(*overrides, artifact_root=root)
        self.refs = {ref.stage: ref for ref in tiny_artifacts.copy_into(root, *overrides)}
        self.store = ArtifactStore(root)
        labels_ref = self.refs.get("prune") or self.refs["relabel"]
        self.labels = SoftLabelReader(self.store.url(labels_ref, LABELS))
        pixels, _, _ = read_image_store(self.store.url(self.refs["synthesize"], IMAGES))
        self.images = normalization(self.config.data).to_input(torch.from_numpy(pixels))


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory, tiny_artifacts) -> Run:
    return Run(tiny_artifacts, tmp_path_factory.mktemp("student") / "a", PRUNED)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, pruned_run) -> Path:
    dest = tmp_path_factory.mktemp("export") / "distilled"
    return write_export(store=pruned_run.store, refs=pruned_run.refs, config=pruned_run.config.model_dump(mode="json"),
                        command="distillery export --preset ci_tiny --set prune.ratio=0.5 --to distilled",
                        dest=dest)


@pytest.mark.parametrize("storage", ["boxes", "seed", "stream"])
def test_replayed_batches_are_the_images_the_teacher_labelled(tmp_path, tiny_artifacts, storage):
    run = Run(tiny_artifacts, tmp_path / "a", [f"relabel.augmentation={storage}"])
    teacher = load_teacher(run.store, run.refs["teacher"], torch.device("cpu"))
    steps = ReplayedSteps(run.images, run.labels, seed=3)
    checked = 0
    with torch.no_grad():
        for step in steps:
            assert step.images.shape == (len(step.teacher_logits), 1, 28, 28)
            # The store holds fp16 logits of the teacher's float32 output on exactly these pixels.
            torch.testing.assert_close(teacher(step.images).half().float(), step.teacher_logits, atol=2e-3, rtol=2e-3)
            checked += 1
    assert checked == len(steps) == 4 * 3


def test_an_unpruned_store_is_replayed_in_stream_order_every_step_once_per_epoch(tmp_path, tiny_artifacts):
    run = Run(tiny_artifacts, tmp_path / "a", [])
    steps = ReplayedSteps(run.images, run.labels, seed=7)
    assert run.labels.num_steps == run.labels.attrs["stream_steps"] == len(steps) == 12  # E=4 epochs of 3 steps
    rows = [step.stored_step for step in steps]
    assert rows == list(range(12))  # every stored step once, as the teacher's stream ran
    for epoch in range(4):
        replayed = [s for s in steps if s.epoch == epoch]
        ids = [run.labels.step(s.stored_step).step_id for s in replayed]
        assert ids == list(range(3 * epoch, 3 * epoch + 3))  # the epoch's own steps, in order


def test_epochs_draw_the_stream_steps_with_replacement_from_the_kept_pool(pruned_run):
    steps = ReplayedSteps(pruned_run.images, pruned_run.labels, seed=7)
    assert pruned_run.labels.num_steps == 6 and steps.steps_per_epoch == 3
    rows = [step.stored_step for step in steps]
    assert len(rows) == len(steps) == 4 * 3  # E epochs of the stream's steps per epoch, though half were pruned
    assert all(0 <= row < 6 for row in rows) and len(set(rows)) < len(rows)  # drawn with replacement
    assert [step.epoch for step in steps] == [i // 3 for i in range(12)]
    assert rows == steps.schedule() == ReplayedSteps(pruned_run.images, pruned_run.labels, seed=7).schedule()
    assert rows != ReplayedSteps(pruned_run.images, pruned_run.labels, seed=8).schedule()
    assert len(ReplayedSteps(pruned_run.images, pruned_run.labels, seed=7, epochs=2)) == 6
    assert ReplayedSteps(pruned_run.images, pruned_run.labels, seed=7, steps=5).schedule() == rows[:5]


def test_evaluate_trains_on_exactly_the_replayed_steps(pruned_run):
    config = pruned_run.config.evaluate.for_stream(epochs=4, batch_size=8)
    runtime = pruned_run.config.runtime
    trained = train_student(pruned_run.images, pruned_run.labels, config, num_classes=10, seed=11, runtime=runtime)
    torch.manual_seed(11)
    student = create_model(config.model, channels=1, num_classes=10, image_size=28, width=config.width,
                           depth=config.depth)
    optimizer = create_optimizer(student, config)
    steps = ReplayedSteps(pruned_run.images, pruned_run.labels, seed=11, epochs=config.epochs)  # ci_tiny: 3 of E=4
    lr = student_lr(config, total=len(steps), steps_per_epoch=steps.steps_per_epoch)
    student.train()
    for step in steps:
        lr.set(optimizer, step.index)
        loss = soft_label_loss(student(step.images), step.teacher_logits, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for name, value in student.state_dict().items():
        assert torch.equal(value, trained.state_dict()[name]), name


def test_an_export_replays_the_same_steps_as_the_artifact_store(pruned_run, exported):
    from_store = list(ReplayedSteps(pruned_run.images, pruned_run.labels, seed=5))
    from_export = list(ReplayedSteps.from_export(exported, seed=5))
    assert len(from_export) == len(from_store) == 12
    for a, b in zip(from_store, from_export):
        assert a.stored_step == b.stored_step
        assert torch.equal(a.images, b.images) and torch.equal(a.teacher_logits, b.teacher_logits)


def test_replay_refuses_images_the_store_was_not_made_from(pruned_run, tmp_path):
    with pytest.raises(SoftLabelStoreError, match="labels 20 images of 28 px, got 19 of 28 px"):
        ReplayedSteps(pruned_run.images[:19], pruned_run.labels, seed=0)
    with pytest.raises(SoftLabelStoreError, match="is not a distillery export"):
        ReplayedSteps.from_export(tmp_path, seed=0)


def test_the_card_records_the_checksum_of_every_exported_file(exported):
    files = json.loads((exported / "card.json").read_text())["files"]
    on_disk = {str(p.relative_to(exported)): p for p in exported.rglob("*") if p.is_file()}
    assert set(files) == set(on_disk) - {"card.json", "card.md"} and len(files) > 20
    assert sum(name.endswith(".png") for name in files) == 20
    for name, entry in files.items():
        data = on_disk[name].read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name


def test_an_export_to_a_relative_folder_is_written_and_checked(pruned_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `distillery export --to distilled`, then from_export("distilled")
    write_export(store=pruned_run.store, refs=pruned_run.refs, config=pruned_run.config.model_dump(mode="json"),
                 command="test", dest=Path("distilled"))
    assert len(ReplayedSteps.from_export("distilled", seed=0)) == 12


def test_an_edited_png_of_an_export_is_refused(exported, tmp_path):
    edited = tmp_path / "distilled"
    shutil.copytree(exported, edited)
    png = edited / "images" / "Bag" / "00016.png"
    with Image.open(png) as image:
        pixels = np.asarray(image).copy()
    pixels[0, 0] ^= 0xFF  # one pixel: still a valid PNG of the right size
    Image.fromarray(pixels).save(png)
    with pytest.raises(SoftLabelStoreError, match=r"is not the set its card describes: images/Bag/00016.png (has \d+ "
                       r"bytes, card.json says \d+|fails its checksum)"):
        ReplayedSteps.from_export(edited, seed=0)


def test_a_damaged_chunk_is_refused_by_export_and_nothing_is_written(tmp_path, tiny_artifacts):
    run = Run(tiny_artifacts, tmp_path / "a", PRUNED)
    labels = Path(run.store.path(run.refs["prune"]))
    chunk = next(p for p in sorted((labels / LABELS / "logits").rglob("*")) if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4] = bytes(b ^ 0xFF for b in data[len(data) // 2: len(data) // 2 + 4])
    chunk.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{chunk.relative_to(labels)} fails its checksum; delete {labels} and "
                       "rerun the same command to rebuild it"):
        write_export(store=run.store, refs=run.refs, config=run.config.model_dump(mode="json"), command="test",
                     dest=tmp_path / "out" / "distilled")
    assert not (tmp_path / "out").exists()


def docs_student_loop() -> str:
    """The first python block of the docs' "Training your own student from a store" section."""
    section = DOCS.read_text().split("## Training your own student from a store", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_docs_student_loop_runs_as_written_on_an_export(exported, monkeypatch, capsys):
    monkeypatch.chdir(exported.parent)  # the docs export to ./distilled
    namespace: dict = {}
    exec(compile(docs_student_loop(), str(DOCS), "exec"), namespace)
    steps, student = namespace["steps"], namespace["student"]
    assert namespace["step"].index == len(steps) - 1 == 11 and math.isfinite(namespace["loss"].item())
    assert capsys.readouterr().out.count("loss") == 4  # one line per epoch
    saved = torch.load(exported.parent / "student.pt", weights_only=True)
    assert set(saved) == set(student.state_dict())
