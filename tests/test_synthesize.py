"""The synthesize stage on real Fashion-MNIST slices: units, stores, resume, bad input."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import zarr

from flows.config import resolve_config
from storage.artifacts import ArtifactStore
from storage.file_names import CLASS_BN_STATS, IMAGES, unit_file
from storage.tensor_files import read_tensors, write_tensors
from storage.image_store import read_image_store
from tasks.data import class_sizes, load_split, normalization
from tasks.stages.stats import StatsRequest
from tasks.stages.synthesize import SynthesisError, SynthesizeRequest, synthesize_task
from tasks.stages.synthesize.recovery import bn_targets_for, optimise_unit
from tasks.stages.synthesize.config import SynthesisConfig, check_real_images
from tasks.stages.stage_task import damaged_units
from tasks.stages.synthesize.stage import SynthesisJob, plan_units
from tasks.models import load_teacher, penultimate_features
from tasks.stages.teacher import teacher_request
from tests.file_trees import tree
from tests.tiny_artifacts import identity
from tests.conftest import kill_when, needs_fashion_mnist

pytestmark = needs_fashion_mnist
SMALL = ["synthesis.ipc=3", "synthesis.iterations=40", "synthesis.batch_size=2"]


def _upstream(tiny_artifacts, config):
    """Teacher and stats artifacts for ``config``: the session's ci_tiny ones (synthesis settings do not
    enter them), copied into its artifact root."""
    teacher, stats = tiny_artifacts.copy_into(config.runtime.artifact_root, until="stats")
    assert teacher == teacher_request(data=config.data, teacher=config.teacher, seed=0, data_identity=identity(config, "train", "val")).ref()
    assert stats == StatsRequest(data=config.data, data_identity=identity(config), stats=config.stats, seed=0, inputs={"teacher": teacher}).ref()
    return {"teacher": teacher, "stats": stats}


def _request(config, inputs):
    needed = inputs if config.synthesis.mode == "lpld" else {"teacher": inputs["teacher"]}
    return SynthesizeRequest(data=config.data, data_identity=identity(config), synthesis=config.synthesis, seed=0, inputs=needed)


@pytest.mark.parametrize("mode", ["lpld", "sre2l", "random_real"])
def test_units_cover_every_position_once(mode):
    units = plan_units(mode, num_classes=10, ipc=7, batch_size=3)
    positions = [p for u in units for p in u.positions]
    assert sorted(positions) == list(range(70))
    for unit in units:
        assert all(p // 7 == label for p, label in zip(unit.positions, unit.labels))
        assert len(unit.labels) <= 3
        if mode == "sre2l":
            assert len(set(p % 7 for p in unit.positions)) == 1  # one IPC slot, several classes
        else:
            assert len(set(unit.labels)) == 1  # one class per batch


def _teachers_view(store, teacher_ref, images, labels, config) -> tuple[float, list[float]]:
    """Teacher agreement and each class's mean pairwise cosine similarity of penultimate features,
    computed pair by pair: what the stage's metrics must say."""
    model = load_teacher(store, teacher_ref, torch.device("cpu"))
    with torch.no_grad():
        x = normalization(config.data).to_input(torch.from_numpy(images))
        agreement = float((model(x).argmax(1).numpy() == labels).mean())
        feats = penultimate_features(model, x)  # (N, D)
    per_class = []
    for c in sorted(set(labels.tolist())):
        members = feats[torch.from_numpy(labels == c)]
        pairs = [float(torch.cosine_similarity(members[i], members[j], dim=0))
                 for i in range(len(members)) for j in range(len(members)) if i != j]
        per_class += [float(np.mean(pairs))] if pairs else []
    return agreement, per_class


def test_ipc_larger_than_a_class_names_the_class_and_fix(tiny_config):
    train = load_split(tiny_config.data, "train")  # the first 200 of each class: data.train_per_class binds
    sizes = class_sizes(train)
    random_real = SynthesisConfig(mode="random_real", ipc=201)
    with pytest.raises(SynthesisError, match=r"synthesis.ipc=201 exceeds the 200 training images of class T-shirt/top "
                                             r"\(10 classes short\); lower synthesis.ipc, or raise data.train_per_class$"):
        check_real_images(random_real, image_size=28, class_sizes=sizes, train_per_class=200)
    with pytest.raises(SynthesisError, match=r"of class Bag; lower synthesis.ipc$"):  # the folder is what binds
        check_real_images(random_real, image_size=28, class_sizes={**dict.fromkeys(sizes, 300), "Bag": 3})
    for fits in (SynthesisConfig(mode="random_real", ipc=200), SynthesisConfig(mode="lpld", ipc=201)):
        check_real_images(fits, image_size=28, class_sizes=sizes)  # noise-started lpld reads no real image
    with pytest.raises(SynthesisError, match=r"synthesis.ipc=201 exceeds"):
        check_real_images(SynthesisConfig(mode="lpld", ipc=201, init="real"), image_size=28, class_sizes=sizes)


@pytest.mark.parametrize("mode", ["lpld", "sre2l", "random_real"])
def test_each_mode_writes_a_store_grid_and_metrics(tmp_path, mode, tiny_artifacts):
    config = resolve_config(preset="ci_tiny", artifact_root=str(tmp_path / "a"), overrides=[*SMALL, f"synthesis.mode={mode}"])
    inputs = _upstream(tiny_artifacts, config)
    store = ArtifactStore(config.runtime.artifact_root)
    ref = synthesize_task.fn(_request(config, inputs), config.runtime)
    images, labels, attributes = read_image_store(store.url(ref, IMAGES))
    assert images.shape == (30, 1, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == np.repeat(np.arange(10), 3).tolist()
    assert attributes["mode"] == mode and attributes["ipc"] == 3 and attributes["teacher"] == inputs["teacher"].fingerprint
    assert store.read_bytes(ref, "grid.png").startswith(b"\x89PNG")
    manifest = store.read_manifest(ref)
    agreement, per_class = _teachers_view(store, inputs["teacher"], images, labels, config)
    assert manifest["metrics"]["teacher_agreement"] == pytest.approx(agreement)
    assert manifest["within_class_similarity_per_class"] == pytest.approx(per_class, abs=1e-5)
    assert manifest["metrics"]["within_class_similarity"] == pytest.approx(np.mean(per_class), abs=1e-5)
    if mode == "random_real":
        train = load_split(config.data, "train")
        picked = {tuple(train.images_at(torch.tensor([i]))[0].flatten().tolist()) for i in range(len(train))}
        assert all(tuple(image.flatten().tolist()) in picked for image in images)
    else:
        units = len(plan_units(mode, num_classes=10, ipc=3, batch_size=2))
        assert len(manifest["unit_losses"]) == units
        curves = zarr.open_group(store.url(ref, IMAGES), mode="r")["loss_curve"][:]
        points = min(20, config.synthesis.iterations)
        assert curves.shape == (units, points, 3) and np.isfinite(curves).all()
        summary = manifest["loss_curve"]
        assert summary["iterations"][-1] == config.synthesis.iterations and len(summary["mean_loss"]) == points
        assert summary["mean_loss"] == pytest.approx(curves[:, :, 0].mean(0), abs=1e-4)
        assert manifest["metrics"]["loss_last_fifth_drop"] == summary["last_fifth_drop"]


def test_synthesis_lowers_the_teachers_loss_on_its_images(tmp_path, tiny_artifacts):
    config = resolve_config(preset="ci_tiny", artifact_root=str(tmp_path / "a"), overrides=[*SMALL, "synthesis.iterations=60"])
    inputs = _upstream(tiny_artifacts, config)
    store = ArtifactStore(config.runtime.artifact_root)
    model = load_teacher(store, inputs["teacher"], torch.device("cpu"))
    norm = normalization(config.data)
    targets = bn_targets_for("lpld", model, read_tensors(store, inputs["stats"], CLASS_BN_STATS), 3, torch.device("cpu"))
    start = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.full((4,), 3)
    before = torch.nn.functional.cross_entropy(model(start), labels).item()
    images, losses, curve = optimise_unit(model, start, labels, targets, config.synthesis, crop_scale_min=0.5, flip=True,
                                          norm=norm, gen=torch.Generator().manual_seed(1), runtime=config.runtime)
    after = torch.nn.functional.cross_entropy(model(norm.to_input(images)), labels).item()
    assert after < before and losses["ce"] < before
    assert curve.shape == (20, 3) and curve[-1, 0] < curve[0, 0]  # 20 windows of 3 iterations; the loss fell
    assert curve[:, 0] == pytest.approx(curve[:, 1] + config.synthesis.r_bn * curve[:, 2], rel=1e-4)


def test_a_nan_during_synthesis_stops_with_the_fix(tiny_config, tiny_artifacts):
    inputs = _upstream(tiny_artifacts, tiny_config)
    store = ArtifactStore(tiny_config.runtime.artifact_root)
    model = load_teacher(store, inputs["teacher"], torch.device("cpu"))
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    targets = bn_targets_for("sre2l", model, None, 0, torch.device("cpu"))
    with pytest.raises(SynthesisError, match="iteration 0 .*lower synthesis.lr"):
        optimise_unit(model, torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]), targets, tiny_config.synthesis,
                      crop_scale_min=0.5, flip=True, norm=normalization(tiny_config.data), gen=torch.Generator(), runtime=tiny_config.runtime)


KILL_SCRIPT = """
import sys
from flows.config import resolve_config
from flows.pipeline import data_identity
from tasks.stages.synthesize import SynthesizeRequest, synthesize_task
from storage.artifacts import ArtifactRef
config = resolve_config(preset="ci_tiny", artifact_root=sys.argv[1], overrides=sys.argv[4:])
inputs = {"teacher": ArtifactRef(stage="teacher", fingerprint=sys.argv[2]), "stats": ArtifactRef(stage="stats", fingerprint=sys.argv[3])}
request = SynthesizeRequest(data=config.data, data_identity=data_identity(config, "synthesize"), synthesis=config.synthesis,
                            seed=0, inputs=inputs)
print(request.ref().fingerprint, flush=True)
synthesize_task.fn(request, config.runtime)
"""


@pytest.mark.slow
def test_a_killed_synthesis_resumes_to_the_same_bytes(tmp_path, tiny_artifacts):
    overrides = ["synthesis.ipc=4", "synthesis.iterations=50", "synthesis.batch_size=2"]
    killed_root, clean_root = tmp_path / "killed", tmp_path / "clean"
    config = resolve_config(preset="ci_tiny", artifact_root=str(killed_root), overrides=overrides)
    inputs = _upstream(tiny_artifacts, config)
    shutil.copytree(killed_root, clean_root)

    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(killed_root), inputs["teacher"].fingerprint, inputs["stats"].fingerprint, *overrides],
        stdout=subprocess.PIPE, text=True,
    )
    units = killed_root / "synthesize" / proc.stdout.readline().strip() / "units"
    finished_before_kill = kill_when(proc, lambda: len(list(units.glob("unit-*.pt"))), at_least=3)
    assert 3 <= finished_before_kill < 20, "the kill should land part-way through the 20 units"
    assert not (units.parent / "manifest.json").exists()

    resumed = synthesize_task.fn(_request(config, inputs), config.runtime)
    clean_config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"artifact_root": str(clean_root)})})
    uninterrupted = synthesize_task.fn(_request(clean_config, inputs), clean_config.runtime)
    assert resumed == uninterrupted
    killed_files = tree(killed_root / "synthesize" / resumed.fingerprint)
    clean_files = tree(clean_root / "synthesize" / resumed.fingerprint)
    killed_files.pop("manifest.json"), clean_files.pop("manifest.json")  # holds timings
    assert killed_files.keys() == clean_files.keys()
    assert killed_files == clean_files
    assert not any(".partial-" in name for name in killed_files)


def test_a_saved_unit_damaged_before_the_stage_is_sealed_is_built_again(tmp_path, tiny_artifacts):
    config = resolve_config(preset="ci_tiny", artifact_root=str(tmp_path / "a"), overrides=SMALL)
    request = _request(config, _upstream(tiny_artifacts, config))
    store, ref = ArtifactStore(tmp_path / "a"), synthesize_task.fn(request, config.runtime)
    folder = tmp_path / "a" / "synthesize" / ref.fingerprint
    whole = tree(folder)
    whole.pop("manifest.json")
    (folder / "manifest.json").unlink()  # unfinished again, as a kill leaves it
    flipped = read_tensors(store, ref, unit_file(1))
    flipped["images"][0, 0, 0, 0] ^= 1  # still loads: only the digest saved with the images tells
    write_tensors(store, ref, unit_file(1), flipped)
    torn = folder / unit_file(4)
    torn.write_bytes(torn.read_bytes()[:100])
    job = SynthesisJob(request, config.runtime)
    assert damaged_units(job, set(job.pending())) == [1, 4]

    assert synthesize_task.fn(request, config.runtime) == ref
    again = tree(folder)
    again.pop("manifest.json")
    assert again == whole  # the two units built again, not sealed as they were


def test_one_image_per_class_is_built_without_a_similarity(tmp_path, tiny_artifacts):
    """IPC 1 is a standard setting; the within-class similarity has no pairs there and is left out."""
    config = resolve_config(preset="ci_tiny", artifact_root=str(tmp_path / "a"),
                            overrides=["synthesis.ipc=1", "synthesis.iterations=10"])
    store, inputs = ArtifactStore(config.runtime.artifact_root), _upstream(tiny_artifacts, config)
    ref = synthesize_task.fn(_request(config, inputs), config.runtime)
    images, labels, _ = read_image_store(store.url(ref, IMAGES))
    assert images.shape == (10, 1, 28, 28) and labels.tolist() == list(range(10))
    metrics = store.read_manifest(ref)["metrics"]
    agreement, _ = _teachers_view(store, inputs["teacher"], images, labels, config)
    assert "within_class_similarity" not in metrics and metrics["teacher_agreement"] == pytest.approx(agreement)


def test_pooled_statistics_are_the_exact_moments_of_all_classes_together(tmp_path, tiny_artifacts):
    """sre2l+pooled matches what lpld matches, pooled over the classes: the moments of the whole train split."""
    from tasks.stages.stats import class_bn_stats
    from tasks.stages.synthesize.recovery import pooled_moments
    from tasks.models import batchnorm_layers

    config = resolve_config(preset="ci_tiny", artifact_root=str(tmp_path / "a"))
    inputs = _upstream(tiny_artifacts, config)
    model = load_teacher(ArtifactStore(config.runtime.artifact_root), inputs["teacher"], torch.device("cpu"))
    train, norm = load_split(config.data, "train"), normalization(config.data)
    plain = config.data.augment.model_copy(update={"enabled": False})
    per_class = class_bn_stats(model, train, config.stats, augment=plain, norm=norm, seed=0, device=torch.device("cpu"))
    layer_name, layer = next(iter(batchnorm_layers(model).items()))
    captured = []
    handle = layer.register_forward_pre_hook(lambda _m, args: captured.append(args[0].double()))
    with torch.no_grad():
        model(norm.to_input(train.images_at(torch.arange(len(train)))))
    handle.remove()
    x = captured[0].transpose(0, 1).flatten(1)  # (C, N*H*W)
    mean, var = pooled_moments(per_class[layer_name])
    torch.testing.assert_close(mean, x.mean(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(var, x.var(1, unbiased=False), atol=1e-6, rtol=0)


def test_sre2l_on_pooled_statistics_reads_the_class_statistics_and_makes_other_images(tmp_path, tiny_artifacts):
    from flows.config import ConfigError

    base = ["synthesis.mode=sre2l", "synthesis.ipc=2", "synthesis.iterations=20"]
    running = tiny_artifacts.copy_into(tmp_path / "a", *base, until="synthesize")
    pooled = tiny_artifacts.copy_into(tmp_path / "a", *base, "synthesis.sre2l_statistics=pooled", until="synthesize")
    assert [r.stage for r in running] == ["teacher", "synthesize"] and [r.stage for r in pooled] == ["teacher", "stats", "synthesize"]
    store = ArtifactStore(tmp_path / "a")
    assert store.read_manifest(pooled[-1])["inputs"]["stats"] == str(pooled[1])
    first, second = (read_image_store(store.url(refs[-1], IMAGES))[0] for refs in (running, pooled))
    assert first.shape == second.shape and not np.array_equal(first, second)
    with pytest.raises(ConfigError, match="sre2l_statistics=pooled applies to mode=sre2l"):
        resolve_config(preset="ci_tiny", overrides=["synthesis.sre2l_statistics=pooled"])


def test_a_whole_real_split_as_the_set_passes_the_teacher_in_batches(tmp_path, tiny_artifacts, monkeypatch):
    """A real set as large as the train split (ci_tiny's 200 a class; a user's headroom check takes all
    54,000 Fashion-MNIST images): the stage's teacher metrics run a batch at a time, not over every image in
    one pass (gigabytes of activations at real sizes), and still say what one pass says; the stored grid and
    the dashboard's image-grid show each class's first GRID_PER_CLASS images."""
    from PIL import Image

    from flows.distill import class_grid_markdown
    from tasks import models
    from storage.image_store import GRID_PER_CLASS

    config = resolve_config(preset="ci_tiny", artifact_root=str(tmp_path / "a"),
                            overrides=["synthesis.mode=random_real", "synthesis.ipc=200"])
    inputs = _upstream(tiny_artifacts, config)
    store = ArtifactStore(config.runtime.artifact_root)
    monkeypatch.setattr(models, "TEACHER_PASS_BATCH", 64)
    batches: list[int] = []
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda _module, args: batches.append(args[0].shape[0]) if args and torch.is_tensor(args[0]) else None)
    try:
        ref = synthesize_task.fn(_request(config, inputs), config.runtime)
    finally:
        hook.remove()
    assert batches and max(batches) <= 64
    images, labels, _ = read_image_store(store.url(ref, IMAGES))
    assert images.shape[0] == 2000
    manifest = store.read_manifest(ref)
    model = load_teacher(store, inputs["teacher"], torch.device("cpu"))
    with torch.no_grad():
        x = normalization(config.data).to_input(torch.from_numpy(images))
        assert manifest["metrics"]["teacher_agreement"] == pytest.approx(float((model(x).argmax(1).numpy() == labels).mean()))
        feats = torch.nn.functional.normalize(penultimate_features(model, x[:200]), dim=1)  # class 0 in one pass
    assert manifest["within_class_similarity_per_class"][0] == pytest.approx(float((feats @ feats.T).sum() - 200) / (200 * 199), abs=1e-5)
    grid = Image.open(io.BytesIO(store.read_bytes(ref, "grid.png")))
    assert grid.size == ((GRID_PER_CLASS * 29 + 1) * 2, (10 * 29 + 1) * 2)
    table = class_grid_markdown(images, labels, load_split(config.data, "train").class_names)  # the dashboard's
    first = Image.open(io.BytesIO(base64.b64decode(table.split("base64,")[1].split(")")[0])))
    assert first.size == ((GRID_PER_CLASS * 29 + 1) * 2, (29 + 1) * 2)
