"""The data's identity in every fingerprint: a split is named by its files, so a rerun rebuilds
exactly what changed (train: the teacher and all below; test: evaluate alone), says so, and a
run whose data changes under it keeps nothing it built from the changed files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from flows.cli import main
from flows.config import resolve_config
from flows.pipeline import data_identity
from flows.without_prefect import run_plain
from storage.artifacts import ArtifactStore
from tasks.data import DataConfig
from tasks.data.identity import DigestMemo, split_identity
from tests.conftest import needs_fashion_mnist

pytestmark = needs_fashion_mnist


def _folder(root: Path, per_class: int = 12, classes: int = 3, test_per_class: int = 4) -> Path:
    """A small ImageFolder tree of distinct 28 px grey JPEGs (train/ and val/)."""
    for split, count in (("train", per_class), ("val", test_per_class)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.new("L", (28, 28), (c * 80 + i * 5) % 256).save(folder / f"{i:03d}.jpg", quality=95)
    return root


def _data(root: Path, **fields) -> DataConfig:
    return DataConfig(name="imagefolder", root=str(root), image_size=28, val_fraction=0, **fields)


def _add_image(root: Path, split: str = "train") -> Path:
    path = root / split / "class0" / "999.jpg"
    Image.new("L", (28, 28), 7).save(path)
    return path


def test_a_listing_digest_changes_when_an_image_is_added_replaced_or_touched(tmp_path):
    root = _folder(tmp_path / "data")
    first = split_identity(_data(root), "train")
    assert first == split_identity(_data(root), "train") and first.images == 36
    assert split_identity(_data(root), "test") != first  # the splits are named apart
    added = _add_image(root)
    assert split_identity(_data(root), "train").images == 37
    added.unlink()
    assert split_identity(_data(root), "train") == first  # the same listing again
    some = root / "train" / "class1" / "003.jpg"
    os.utime(some, ns=(some.stat().st_atime_ns, some.stat().st_mtime_ns + 1))
    assert split_identity(_data(root), "train") != first  # a touch: the listing cannot tell it from an edit


def test_a_content_digest_ignores_a_touch_and_sees_one_changed_byte(tmp_path):
    root = _folder(tmp_path / "data")
    first = split_identity(_data(root, identity="content"), "train")
    some = root / "train" / "class1" / "003.jpg"
    os.utime(some, ns=(some.stat().st_atime_ns, some.stat().st_mtime_ns + 10**9))
    assert split_identity(_data(root, identity="content"), "train") == first
    data = bytearray(some.read_bytes())
    data[-3] ^= 1
    some.write_bytes(bytes(data))
    assert split_identity(_data(root, identity="content"), "train") != first


def test_packaged_files_are_hashed_once_and_again_only_when_they_change(tmp_path):
    fashion = tmp_path / "fashion"
    shutil.copytree("/usr/share/datasets/fashion-mnist", fashion)
    data = DataConfig(root=str(fashion), train_per_class=5)
    memo_file = tmp_path / "memo.json"
    honest = split_identity(data, "test", memo=DigestMemo(memo_file))
    assert honest.images == 10_000
    memo = DigestMemo(memo_file)
    assert len(memo.entries) == 2  # the images and the labels file
    for entry in memo.entries.values():
        entry[2] = "0" * 64  # what a reread would never give: the memo is trusted while size and time hold
    memo.changed = True
    memo.save()
    assert split_identity(data, "test", memo=DigestMemo(memo_file)) != honest
    labels = fashion / "t10k-labels-idx1-ubyte.gz"
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 1))
    images = fashion / "t10k-images-idx3-ubyte.gz"
    os.utime(images, ns=(images.stat().st_atime_ns, images.stat().st_mtime_ns + 1))
    assert split_identity(data, "test", memo=DigestMemo(memo_file)) == honest  # changed stamps: read again


def _tiny_on(root: Path, artifacts: Path, *extra: str):
    return resolve_config(preset="ci_tiny", artifact_root=str(artifacts), overrides=[
        "data.name=imagefolder", f"data.root={root}", "data.image_size=28", "data.train_per_class=null",
        "data.test_limit=null", "runtime.workers=0", "synthesis.ipc=2", *extra])


@pytest.mark.slow
def test_a_changed_test_split_rebuilds_evaluate_alone(tmp_path):
    root, artifacts = _folder(tmp_path / "data"), tmp_path / "artifacts"
    config = _tiny_on(root, artifacts)
    before = [o.ref for o in run_plain(config)]
    _add_image(root, "val")
    after = [o.ref for o in run_plain(config)]
    assert [r.stage for r in after] == [r.stage for r in before]
    changed = [new.stage for old, new in zip(before, after) if old != new]
    assert changed == ["evaluate"]
    manifest = ArtifactStore(artifacts).read_manifest(after[-1])
    assert manifest["config"]["data_identity"]["test"]["images"] == 13  # 12 + the new one


def _run(capfd, *argv: str) -> tuple[int, str]:
    code = main(["run", *argv])
    out, err = capfd.readouterr()
    return code, out + err


def _states(output: str) -> dict[str, str]:
    """Each stage's state, from the summary table's rows (the artifact list below it is indented)."""
    stages = ("normalization", "teacher", "stats", "synthesize", "relabel", "evaluate")
    return {line.split()[0]: line.split()[1] for line in output.splitlines()
            if line.split()[:1] and line.split()[0] in stages and not line.startswith(" ")}


@pytest.mark.slow
def test_an_image_added_to_train_rebuilds_the_teacher_and_the_summary_says_why(tmp_path, capfd, prefect_server):
    root, artifacts = _folder(tmp_path / "data"), tmp_path / "artifacts"
    argv = ["--preset", "ci_tiny", "--artifact-root", str(artifacts), "--set", "data.name=imagefolder",
            "--set", f"data.root={root}", "--set", "data.image_size=28", "--set", "data.train_per_class=null",
            "--set", "data.test_limit=null", "--set", "runtime.workers=0", "--set", "synthesis.ipc=2"]
    code, first = _run(capfd, *argv)
    assert code == 0, first[-3000:]
    train = data_identity(_tiny_on(root, artifacts), "evaluate")["train"]
    assert f"train {train.images} images (digest {train.short()})" in first and "data changed" not in first

    _add_image(root)
    code, second = _run(capfd, *argv)
    assert code == 0, second[-3000:]
    now = data_identity(_tiny_on(root, artifacts), "evaluate")["train"]
    assert now.images == train.images + 1  # 33 -> 34: a class of 12 gives 1 to validation, of 13 too
    assert f"data changed since the previous run: train: {now.images} images, digest {now.short()} (was " \
           f"{train.short()}, {train.images} images)" in second
    assert {stage: state for stage, state in _states(second).items()} == {
        "normalization": "Completed", "teacher": "Completed", "stats": "Completed", "synthesize": "Completed",
        "relabel": "Completed", "evaluate": "Completed"}

    code, third = _run(capfd, *argv)
    assert code == 0 and set(_states(third).values()) == {"Cached"} and "data changed" not in third, third[-3000:]


@pytest.mark.slow
def test_data_that_changes_during_a_run_leaves_nothing_built_from_it(tmp_path, capfd, prefect_server, monkeypatch):
    import flows.distill

    root, artifacts = _folder(tmp_path / "data"), tmp_path / "artifacts"
    config = _tiny_on(root, artifacts)
    kept = [o.ref for o in run_plain(config, until="teacher")]  # built before the run: reused, and kept
    real = flows.distill.run_pipeline

    def images_arrive_meanwhile(*args, **kwargs):
        outcomes = real(*args, **kwargs)
        _add_image(root)
        return outcomes

    monkeypatch.setattr(flows.distill, "run_pipeline", images_arrive_meanwhile)
    with pytest.raises(flows.distill.DataChangedError, match=r"changed while this run read it \(train: 33 images, "
                       r"digest \w+ -> 34 images, digest \w+; val: 3 images, digest \w+ -> 3 images, digest \w+\); "
                       r"the 4 artifacts it built from it were removed"):
        flows.distill.distill(config=config)
    store = ArtifactStore(artifacts)
    assert all(store.is_complete(ref) for ref in kept)
    assert {p.parent.parent.name for p in artifacts.glob("*/*/manifest.json")} == {"normalization", "teacher"}
