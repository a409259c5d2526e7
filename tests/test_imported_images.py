"""synthesis.mode=imported on real Fashion-MNIST images written as class folders of PNGs: the set runs to
evaluate and into DD-Ranking like our own modes, is named by its bytes, and every bad folder is refused
by name before anything runs (and by the stage itself when the folder changes under a run)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flows.cli import main
from flows.config import ConfigError, resolve_config
from flows.without_prefect import run_plain
from storage.artifacts import ArtifactStore
from storage.file_names import IMAGES, LABELS
from storage.image_store import read_image_store
from storage.softlabels import SoftLabelReader
from tasks.data import load_split
from tasks.data.class_folders import ImportedImagesError, write_class_folders
from tasks.report.claims import ranking_rows
from tasks.report.rows import result_row
from tasks.stages.synthesize import synthesize_request, synthesize_task
from tests.tiny_artifacts import identity
from tests.conftest import needs_fashion_mnist

pytestmark = needs_fashion_mnist
IPC = 3


def imported(root: Path, folder: Path, *extra: str):
    return resolve_config(preset="ci_tiny", artifact_root=str(root), overrides=[
        "synthesis.mode=imported", f"synthesis.import_root={folder}", f"synthesis.ipc={IPC}", *extra])


@pytest.fixture(scope="module")
def real_set(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """The last IPC ci_tiny training images of each class (uint8 (N, 1, 28, 28)) and their labels."""
    train = load_split(resolve_config(preset="ci_tiny").data, "train")
    index = torch.cat([torch.nonzero(train.labels == c).squeeze(1)[-IPC:] for c in range(train.num_classes)])
    return train.images_at(index).numpy(), train.labels[index].numpy()


@pytest.fixture
def root(tmp_path, tiny_artifacts) -> Path:
    """The test's artifact root, holding the session's ci_tiny teacher (an imported set needs no other stage)."""
    tiny_artifacts.copy_into(tmp_path / "a", until="teacher")
    return tmp_path / "a"


@pytest.fixture
def folder(tmp_path, real_set) -> Path:
    """A class-folder tree of PNGs of those images, as an outside tool might have written them."""
    write_class_folders(*real_set, class_names=load_split(resolve_config(preset="ci_tiny").data, "train").class_names,
                        dest=tmp_path / "released")
    return tmp_path / "released"


def test_an_imported_folder_runs_to_evaluate_and_into_dd_ranking(root, folder, real_set):
    soft = imported(root, folder, "prune.ratio=0.5")
    outcomes = {o.ref.stage: o.ref for o in run_plain(soft)}
    assert "stats" not in outcomes and {"synthesize", "relabel", "prune", "evaluate"} <= set(outcomes)
    store = ArtifactStore(root)
    pixels, classes, attrs = read_image_store(store.url(outcomes["synthesize"], IMAGES))
    assert np.array_equal(pixels, real_set[0]) and np.array_equal(classes, real_set[1])  # entered as they are
    assert attrs["mode"] == "imported" and attrs["ipc"] == IPC
    labels = SoftLabelReader(store.url(outcomes["prune"], LABELS), expect={"images": outcomes["synthesize"].fingerprint})
    assert labels.num_steps == 8  # 30 images, batch 8: 4 steps an epoch, 4 epochs, half kept

    def row(config, point):
        refs = {o.ref.stage: o.ref for o in run_plain(config)}
        manifests = {stage: store.read_manifest(ref) for stage, ref in refs.items()}
        return result_row(point, config, [manifests], evaluate_state="Completed", shared_teacher=False,
                          images_fingerprint=refs["synthesize"].fingerprint if "synthesize" in refs else "")

    base = imported(root, folder)
    rows = [row(base, {"mode": "imported"}),
            row(base.model_copy(update={"evaluate": base.evaluate.model_copy(update={"labels": "hard"})}), {}),
            row(resolve_config(preset="ci_tiny", artifact_root=str(root),
                               overrides=["synthesis.mode=random_real", f"synthesis.ipc={IPC}"]), {}),
            row(resolve_config(preset="ci_tiny", artifact_root=str(root),
                               overrides=["evaluate.labels=hard", "evaluate.train_set=full"]), {})]
    assert rows[0]["mode"] == "imported" and 0 <= rows[0]["test_top1"] <= 1
    ranked = {r["mode"]: r for r in ranking_rows(rows)}
    assert set(ranked) == {"imported"} and ranked["imported"]["ipc"] == IPC  # random_real has no hard-label point here
    assert 0 <= ranked["imported"]["lrs"] <= 1


def test_imported_images_are_named_by_their_bytes_not_their_path_or_time(tmp_path, folder):
    def fingerprint(where: Path) -> str:
        config = imported(tmp_path / "a", where)
        return synthesize_request(data=config.data, data_identity=identity(config), synthesis=config.synthesis, seed=0, inputs={}).fingerprint()

    first = fingerprint(folder)
    moved = shutil.copytree(folder, tmp_path / "elsewhere")
    some = sorted((moved / "Bag").iterdir())[0]
    os.utime(some, (1, 1))
    some.rename(some.with_name("00024-renamed.png"))  # same place in name order, same bytes
    assert fingerprint(moved) == first
    with Image.open(some.with_name("00024-renamed.png")) as image:
        pixels = np.asarray(image).copy()
    pixels[0, 0] ^= 1  # one pixel, one bit
    Image.fromarray(pixels).save(some.with_name("00024-renamed.png"))
    assert fingerprint(moved) != first


def _first(folder: Path, name: str) -> Path:
    return sorted((folder / name).iterdir())[0]


def _foreign_folder(folder: Path) -> None:
    (folder / "Bag").rename(folder / "Handbag")


def _undecodable(folder: Path) -> None:
    _first(folder, "Coat").write_bytes(b"this is no PNG")


def _other_size(folder: Path) -> None:
    Image.new("L", (32, 32), 128).save(_first(folder, "Sandal"))


def _empty_class(folder: Path) -> None:
    for path in (folder / "Dress").iterdir():
        path.unlink()


def _unequal_counts(folder: Path) -> None:
    _first(folder, "Shirt").unlink()


BAD_FOLDERS = {
    "foreign class folder": (_foreign_folder, [], "do not match the data set's classes (unknown: ['Handbag'], "
                             "missing: ['Bag']); name one folder per class exactly: T-shirt_top, Trouser"),
    "undecodable file": (_undecodable, [], "cannot decode image {folder}/Coat/00012.png"),
    "image of another size": (_other_size, [], "1 of 30 images in {folder} are not 28x28 like the data set's, e.g. "
                              "{folder}/Sandal/00015.png (32x32); resize them, or set synthesis.import_resize=true"),
    "empty class": (_empty_class, [], "class folder {folder}/Dress holds no images"),
    "unequal counts": (_unequal_counts, [], "hold different numbers of images (most hold 3; Shirt: 2); an image set "
                       "has one IPC, so give every class the same number of images"),
    "ipc other than the count found": (lambda folder: None, ["--set", "synthesis.ipc=2"],
                                       "synthesis.ipc=2, but {folder} holds 3 images in every class; set synthesis.ipc=3"),
    "no such folder": (shutil.rmtree, [], "synthesis.import_root {folder} is not a folder"),
}


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_a_bad_folder_is_one_message_and_exit_2_before_anything_runs(tmp_path, folder, capfd, case):
    spoil, extra, message = BAD_FOLDERS[case]
    spoil(folder)
    code = main(["run", "--preset", "ci_tiny", "--artifact-root", str(tmp_path / "a"), "--set", "synthesis.mode=imported",
                 "--set", f"synthesis.import_root={folder}", "--set", f"synthesis.ipc={IPC}", *extra])
    out, err = capfd.readouterr()
    assert code == 2 and "Traceback" not in out + err
    assert err.startswith("distillery: ") and message.format(folder=folder) in err, err
    assert not (tmp_path / "a").exists()  # refused before the artifact root or Prefect was touched


def test_images_of_another_size_are_resized_on_request(root, folder, real_set):
    _other_size(folder)
    config = imported(root, folder, "synthesis.import_resize=true")
    refs = {o.ref.stage: o.ref for o in run_plain(config, until="synthesize")}
    pixels, _, _ = read_image_store(ArtifactStore(root).url(refs["synthesize"], IMAGES))
    assert pixels.shape == (30, 1, 28, 28) and (pixels[15] == 128).all()  # Sandal's first image: flat 32x32 grey
    assert np.array_equal(np.delete(pixels, 15, axis=0), np.delete(real_set[0], 15, axis=0))


def test_the_stage_refuses_a_folder_changed_after_the_run_named_it(root, folder):
    config = imported(root, folder)
    teacher = run_plain(config, until="teacher")[0].ref
    request = synthesize_request(data=config.data, data_identity=identity(config), synthesis=config.synthesis, seed=0, inputs={"teacher": teacher})
    _first(folder, "Bag").write_bytes(_first(folder, "Sneaker").read_bytes())
    with pytest.raises(ImportedImagesError, match="changed after this run named them"):
        synthesize_task.fn(request, config.runtime)
    assert not ArtifactStore(root).is_complete(request.ref())


@pytest.mark.parametrize("overrides, message", [
    (["synthesis.mode=imported"], "synthesis.mode=imported reads synthesis.import_root"),
    (["synthesis.import_root=/tmp"], "apply only to mode=imported (mode is lpld)"),
    (["synthesis.mode=imported", "synthesis.import_root=/tmp", "synthesis.init=real"], "synthesis.init applies to"),
])
def test_import_settings_that_do_not_fit_the_mode_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_config(preset="ci_tiny", overrides=overrides)


def test_imported_jpegs_enter_an_imagefolder_set_as_its_own_loader_reads_them(tmp_path):
    from tasks.bench.imagefolder import write_fashion_jpeg_folder

    data_root = write_fashion_jpeg_folder(tmp_path / "jpeg", train_per_class=20, test_limit=100)
    config = resolve_config(preset="ci_tiny", artifact_root=str(tmp_path / "a"), overrides=[
        "data.name=imagefolder", f"data.root={data_root}", "data.image_size=28", "data.train_per_class=null",
        "data.test_limit=null", "data.val_fraction=0", "runtime.workers=0", "synthesis.mode=imported",
        f"synthesis.import_root={data_root / 'train'}", "synthesis.ipc=20"])  # the train JPEGs, imported as a set
    refs = {o.ref.stage: o.ref for o in run_plain(config, until="synthesize")}
    pixels, classes, _ = read_image_store(ArtifactStore(tmp_path / "a").url(refs["synthesize"], IMAGES))
    train = load_split(config.data, "train")
    assert pixels.shape == (200, train.channels, 28, 28)
    assert np.array_equal(pixels, train.images_at(torch.arange(200)).numpy()) and np.array_equal(classes, train.labels)
