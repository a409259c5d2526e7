"""The pipeline on real JPEG folders (issue 16 items 1-2): an ImageFolder and the Tiny-ImageNet
layout written from the installed Fashion-MNIST files, decoded by DataLoader worker processes,
normalised with figures measured from the train split."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
import torch

from flows.config import resolve_config
from flows.without_prefect import run_plain
from storage.artifacts import ArtifactStore
from tasks.bench.imagefolder import class_folder_names, write_fashion_jpeg_folder
from tasks.data import DataConfig, load_split, normalization
from tasks.stages.normalization import measure_normalization
from tasks.data.batches import image_batches

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="needs the Debian package dataset-fashion-mnist")


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory) -> Path:
    """train/<k>_<class>/*.jpg (30 per class) and val/<k>_<class>/*.jpg (the first 200 test images)."""
    return write_fashion_jpeg_folder(tmp_path_factory.mktemp("fm-jpeg"), train_per_class=30, test_limit=200)


@pytest.fixture(scope="module")
def tiny_imagenet_folder(jpeg_folder: Path, tmp_path_factory) -> Path:
    """The same JPEGs in Tiny-ImageNet's layout: train/<wnid>/images/<wnid>_<i>.JPEG with a boxes file,
    val/images/val_<i>.JPEG named in val/val_annotations.txt."""
    root = tmp_path_factory.mktemp("tiny-imagenet")
    names = class_folder_names(load_split(DataConfig(), "test").class_names)
    wnid = {name: f"n{k:08d}" for k, name in enumerate(names)}
    for name in names:
        images = root / "train" / wnid[name] / "images"
        images.mkdir(parents=True)
        for i, jpeg in enumerate(sorted((jpeg_folder / "train" / name).iterdir())):
            (images / f"{wnid[name]}_{i}.JPEG").write_bytes(jpeg.read_bytes())
        (root / "train" / wnid[name] / f"{wnid[name]}_boxes.txt").write_text("")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for name in names:
        for jpeg in sorted((jpeg_folder / "val" / name).iterdir()):
            file = f"val_{len(lines)}.JPEG"
            (root / "val" / "images" / file).write_bytes(jpeg.read_bytes())
            lines.append(f"{file}\t{wnid[name]}\t0\t0\t27\t27")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def _config(root: Path, artifacts: Path, *extra: str):
    return resolve_config(preset="ci_tiny", artifact_root=str(artifacts), overrides=[
        "data.name=imagefolder", f"data.root={root}", "data.image_size=28", "data.train_per_class=null",
        "data.test_limit=null", "data.val_fraction=0", "runtime.workers=2", "teacher.epochs=3", *extra])


@pytest.mark.parametrize("layout", ["imagefolder", "tiny_imagenet"])
def test_pipeline_runs_to_evaluate_on_a_jpeg_folder(layout, jpeg_folder, tiny_imagenet_folder, tmp_path):
    root = jpeg_folder if layout == "imagefolder" else tiny_imagenet_folder
    config = _config(root, tmp_path / "artifacts")

    outcomes = run_plain(config)

    store = ArtifactStore(config.runtime.artifact_root)
    assert [o.ref.stage for o in outcomes] == ["normalization", "teacher", "stats", "synthesize", "relabel", "evaluate"]
    teacher = store.read_manifest(outcomes[1].ref)
    assert teacher["model_input"] == {"channels": 1, "num_classes": 10, "image_size": 28}  # grayscale stays 1-channel
    evaluate = store.read_manifest(outcomes[-1].ref)
    assert 0.3 < evaluate["metrics"]["teacher_test_top1"] <= 1  # learned from the JPEGs: chance is 0.1
    assert len(load_split(config.data, "test")) == 200
    assert 0 <= evaluate["metrics"]["test_top1"] <= 1


def test_normalization_is_measured_from_the_train_split_and_enters_every_fingerprint(jpeg_folder, tmp_path):
    config = _config(jpeg_folder, tmp_path / "artifacts")

    outcomes = run_plain(config, until="stats")

    store = ArtifactStore(config.runtime.artifact_root)
    train = load_split(config.data, "train")
    pixels = train.images_at(torch.arange(len(train))).double() / 255  # (300, 1, 28, 28), read directly
    measured = store.read_manifest(outcomes[0].ref)
    assert measured["mean"] == [round(pixels.mean().item(), 4)]
    assert measured["std"] == [round(pixels.std(unbiased=False).item(), 4)]
    assert measured["mean"] != [0.485]  # not ImageNet's, which imagefolder used to assume
    for outcome in outcomes[1:]:
        data = store.read_manifest(outcome.ref)["config"]["data"]
        assert (data["mean"], data["std"], data["channels"]) == (measured["mean"], measured["std"], 1)
    given = _config(jpeg_folder, tmp_path / "artifacts", "data.mean=[0.5]", "data.std=[0.25]")
    given_outcomes = run_plain(given, until="teacher")
    assert [o.ref.stage for o in given_outcomes] == ["teacher"]  # given figures: nothing to measure
    assert given_outcomes[0].ref != outcomes[1].ref
    assert store.read_manifest(given_outcomes[0].ref)["config"]["data"]["mean"] == [0.5]


def test_streaming_pass_gives_the_published_fashion_mnist_figures():
    # The constants fashion_mnist keeps are what the streaming pass measures on the installed train split.
    train = load_split(DataConfig(), "train")
    assert measure_normalization(train, workers=0) == normalization(DataConfig())


class _CountingSource:
    """An ImageSource that records which process decoded each piece and how many pieces were decoded."""

    channels, image_size, class_names = 1, 4, ("a",)
    num_classes = 1

    def __init__(self, size: int) -> None:
        self.labels = torch.zeros(size, dtype=torch.int64)
        self.decoded = multiprocessing.get_context("fork").Value("i", 0)

    def __len__(self) -> int:
        return len(self.labels)

    def images_at(self, index: torch.Tensor) -> torch.Tensor:
        with self.decoded.get_lock():
            self.decoded.value += 1
        images = torch.zeros(len(index), 1, 4, 4, dtype=torch.int32)
        images[:, 0, 0, 0], images[:, 0, 0, 1] = index.int(), os.getpid()
        return images


def test_files_are_decoded_in_worker_processes_a_few_pieces_ahead():
    source = _CountingSource(32 * 200)  # 200 pieces of 32
    batches = torch.arange(len(source)).flip(0).split(64)

    stream = image_batches(source, batches, workers=2, device=torch.device("cpu"))
    index, first = next(stream)
    ahead = source.decoded.value
    rest = list(stream)

    assert ahead <= 2 * 4 + 2  # the first batch's 2 pieces plus 4 prefetched per worker: never the split
    assert torch.equal(first[:, 0, 0, 0], index.int())
    pids = {int(p) for images in [first, *(images for _, images in rest)] for p in images[:, 0, 0, 1]}
    assert len(pids) == 2 and os.getpid() not in pids
    assert torch.equal(torch.cat([index, *(i for i, _ in rest)]), torch.arange(len(source)).flip(0))


def test_worker_count_does_not_change_the_images(jpeg_folder):
    train = load_split(DataConfig(name="imagefolder", root=str(jpeg_folder), image_size=20), "train")
    batches = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).split(70)

    in_process = [images for _, images in image_batches(train, batches, workers=0, device=torch.device("cpu"))]
    in_workers = [images for _, images in image_batches(train, batches, workers=2, device=torch.device("cpu"))]

    direct = [train.images_at(index) for index in batches]  # (70, 1, 20, 20) each, decoded one by one
    assert all(torch.equal(a, b) for a, b in zip(in_workers, direct, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(in_process, direct, strict=True))


def _decode_in_daemon(folder: str, results: multiprocessing.Queue) -> None:
    train = load_split(DataConfig(name="imagefolder", root=folder, image_size=20, val_fraction=0), "train")
    batches = torch.arange(len(train)).split(100)
    results.put(sum(len(images) for _, images in image_batches(train, batches, workers=2, device=torch.device("cpu"))))


def test_a_daemon_process_such_as_a_dask_worker_decodes_in_process(jpeg_folder):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    daemon = context.Process(target=_decode_in_daemon, args=(str(jpeg_folder), results), daemon=True)
    daemon.start()
    daemon.join(timeout=120)

    assert daemon.exitcode == 0 and results.get(timeout=5) == 300  # daemons may not start DataLoader workers
