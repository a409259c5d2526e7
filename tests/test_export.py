"""`distillery export` through the real CLI and Prefect on ci_tiny Fashion-MNIST: the folder it writes,
the card, and the round trip export -> import (synthesis.mode=imported) -> export, which gives the same
PNG bytes, the same soft-label bytes and the same students; an existing target is refused untouched."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from flows.cli import main
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.image_store import read_image_store
from tasks.export import ExportError, check_export_target, write_export
from storage.file_names import IMAGES
from tests.file_trees import digests
from tests.conftest import needs_fashion_mnist

PROJECT_ROOT = Path(__file__).resolve().parent.parent

pytestmark = [needs_fashion_mnist, pytest.mark.slow]
TINY = ["--preset", "ci_tiny", "--set", "prune.ratio=0.5"]


def card(folder: Path) -> dict:
    return json.loads((folder / "card.json").read_text())


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory, prefect_server) -> dict[str, Path]:
    """A ci_tiny export, then the same config with its images imported back, exported again."""
    base = tmp_path_factory.mktemp("export")
    paths = {"root": base / "a", "first": base / "distilled", "second": base / "reimported"}
    assert main(["export", *TINY, "--artifact-root", str(paths["root"]), "--to", str(paths["first"])]) == 0
    assert main(["export", *TINY, "--artifact-root", str(paths["root"]), "--set", "synthesis.mode=imported",
                 "--set", f"synthesis.import_root={paths['first'] / 'images'}", "--to", str(paths["second"])]) == 0
    return paths


def test_export_writes_class_folders_of_pngs_the_store_and_a_card(round_trip):
    first, store = round_trip["first"], ArtifactStore(round_trip["root"])
    written = card(first)
    assert sorted(p.name for p in (first / "images").iterdir()) == sorted(written["data"]["class_folders"])
    assert "T-shirt_top" in written["data"]["class_folders"] and "T-shirt/top" in written["data"]["class_names"]
    assert len(list((first / "images").rglob("*.png"))) == 20 and (first / "card.md").is_file()
    assert written["command"] == (f"distillery export --preset ci_tiny --set prune.ratio=0.5 --artifact-root "
                                  f"{round_trip['root']} --to {first}")
    refs = {stage: ArtifactRef(stage=stage, fingerprint=fp) for stage, fp in written["fingerprints"].items()}
    assert set(refs) == {"teacher", "stats", "synthesize", "relabel", "prune", "evaluate"}
    assert written["metrics"]["evaluate"] == store.read_manifest(refs["evaluate"])["metrics"]
    assert written["config"]["prune"]["ratio"] == 0.5 and written["data"]["mean"] == [0.286]
    assert digests(first / "labels.zarr") == digests(Path(store.path(refs["prune"], "labels.zarr")))  # the pruned store, byte for byte
    pixels, _, _ = read_image_store(store.url(refs["synthesize"], IMAGES))
    with Image.open(first / "images" / "Bag" / "00016.png") as png:
        assert np.array_equal(np.asarray(png), pixels[16, 0])  # named by store index, pixels as stored
    assert f"{written['metrics']['evaluate']['test_top1']:.4f}" in (first / "card.md").read_text()
    named = re.findall(r"\(([\w/]+\.py)\)", (first / "card.md").read_text())
    assert named and all((PROJECT_ROOT / module).is_file() for module in named), named  # the code it points to exists


def test_export_then_import_gives_the_same_bytes_and_the_same_students(round_trip):
    first, second, store = round_trip["first"], round_trip["second"], ArtifactStore(round_trip["root"])
    one, two = card(first), card(second)
    assert two["images"]["mode"] == "imported" and one["fingerprints"]["synthesize"] != two["fingerprints"]["synthesize"]
    assert one["fingerprints"]["teacher"] == two["fingerprints"]["teacher"]
    assert digests(first / "images") == digests(second / "images")  # the same PNG bytes
    pixels = [read_image_store(store.url(ArtifactRef(stage="synthesize", fingerprint=c["fingerprints"]["synthesize"]),
                                         IMAGES))[0] for c in (one, two)]
    assert np.array_equal(*pixels)
    # The same label bytes: every chunk and array header; the group's attributes differ only in provenance.
    labels_one, labels_two = digests(first / "labels.zarr"), digests(second / "labels.zarr")
    assert {k: v for k, v in labels_one.items() if k != "zarr.json"} == {k: v for k, v in labels_two.items() if k != "zarr.json"}
    attrs = [dict(zarr.open_group(str(f / "labels.zarr"), mode="r").attrs) for f in (first, second)]
    assert {k for k in attrs[0] if attrs[0][k] != attrs[1].get(k)} == {"images", "pruned_from"}
    # The same students: every seed's test top-1.
    per_seed = [store.read_manifest(ArtifactRef(stage="evaluate", fingerprint=c["fingerprints"]["evaluate"]))[
        "test_top1_per_seed"] for c in (one, two)]
    assert per_seed[0] == per_seed[1] and one["metrics"]["evaluate"]["test_top1"] == two["metrics"]["evaluate"]["test_top1"]


def test_an_existing_target_is_refused_before_anything_runs_and_left_untouched(tmp_path, capfd):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    code = main(["export", *TINY, "--artifact-root", str(tmp_path / "a"), "--to", str(target)])
    out, err = capfd.readouterr()
    assert code == 2 and "Traceback" not in out + err
    assert err == (f"distillery: export target {target} already exists; give a new folder to --to (an export never "
                   "overwrites), or remove the old one first\n")
    assert digests(target) == {"notes.txt": hashlib.sha256(b"mine").hexdigest()} and not (tmp_path / "a").exists()


def test_a_config_without_soft_labels_is_refused(tmp_path, capfd):
    code = main(["export", *TINY, "--set", "evaluate.labels=hard", "--artifact-root", str(tmp_path / "a"),
                 "--to", str(tmp_path / "out")])
    assert code == 2 and "export writes the images and the soft-label store" in capfd.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_failed_export_leaves_no_half_folder(round_trip, tmp_path, monkeypatch):
    refs = {stage: ArtifactRef(stage=stage, fingerprint=fp) for stage, fp in card(round_trip["first"])["fingerprints"].items()}
    store = ArtifactStore(round_trip["root"])

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.fs, "get", disk_full)  # the images are written, then copying the store fails
    with pytest.raises(OSError, match="No space left"):
        write_export(store=store, refs=refs, config=card(round_trip["first"])["config"], command="test",
                     dest=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a partial folder
    with pytest.raises(ExportError, match="already exists"):
        check_export_target(round_trip["first"])
