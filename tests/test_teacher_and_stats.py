"""The teacher and class-statistics stages as plain functions on real Fashion-MNIST slices."""

from __future__ import annotations

import pytest
import torch

from storage.artifacts import ArtifactStore
from storage.file_names import CLASS_BN_STATS
from storage.tensor_files import read_tensors
from tasks.data import load_split, normalization
from tasks.models import batchnorm_layers, load_teacher
from tasks.stages.stats import StatsRequest, class_bn_stats, stats_task
from tasks.stages.teacher import teacher_request, teacher_task
from tasks.training import top1_accuracy, warmup_cosine
from tests.conftest import needs_fashion_mnist
from tests.tiny_artifacts import identity

pytestmark = needs_fashion_mnist


@pytest.fixture
def stored_teacher(tiny_config, tiny_artifacts):
    """The ci_tiny teacher (trained once per session by its stage entry), copied into this test's root."""
    [teacher] = tiny_artifacts.copy_into(tiny_config.runtime.artifact_root, until="teacher")
    assert teacher == teacher_request(data=tiny_config.data, teacher=tiny_config.teacher,
                                      seed=tiny_config.runtime.seed, data_identity=identity(tiny_config, "train", "val")).ref()
    return teacher


def test_lr_warms_up_linearly_then_decays_to_zero():
    factors = [warmup_cosine(s, warmup_steps=4, total_steps=20) for s in range(21)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))
    assert factors[20] == pytest.approx(0.0)


def test_teacher_learns_above_chance_and_evaluate_reports_its_test_accuracy(tiny_config, tiny_artifacts):
    """The teacher is named by the train and validation splits (scored on the latter); its test top-1 is
    measured where the test split is read."""
    refs = {ref.stage: ref for ref in tiny_artifacts.copy_into(tiny_config.runtime.artifact_root)}
    store = ArtifactStore(tiny_config.runtime.artifact_root)
    manifest = store.read_manifest(refs["teacher"])
    assert set(manifest["config"]["data_identity"]) == {"train", "val"} and "test_top1" not in manifest["metrics"]
    assert 0.3 < manifest["metrics"]["val_top1"] <= 1
    model = load_teacher(store, refs["teacher"], torch.device("cpu"))
    test = load_split(tiny_config.data, "test")
    measured = top1_accuracy(model, test, norm=normalization(tiny_config.data), device=torch.device("cpu"))
    assert store.read_manifest(refs["evaluate"])["metrics"]["teacher_test_top1"] == measured
    assert measured > 0.3  # 10 classes: chance is 0.1


def test_same_request_gives_the_same_weight_bytes(tiny_config, stored_teacher, tmp_path):
    again = tiny_config.runtime.model_copy(update={"artifact_root": str(tmp_path / "second")})
    request = teacher_request(data=tiny_config.data, teacher=tiny_config.teacher, seed=tiny_config.runtime.seed, data_identity=identity(tiny_config, "train", "val"))
    teacher_task.fn(request, again)
    first = ArtifactStore(tiny_config.runtime.artifact_root).read_bytes(stored_teacher, "model.pt")
    second = ArtifactStore(again.artifact_root).read_bytes(stored_teacher, "model.pt")
    assert first == second


def test_given_weights_are_used_instead_of_training(tiny_config, stored_teacher, tmp_path):
    store = ArtifactStore(tiny_config.runtime.artifact_root)
    weights = tmp_path / "weights.pt"
    weights.write_bytes(store.read_bytes(stored_teacher, "model.pt"))
    given = tiny_config.teacher.model_copy(update={"weights": str(weights)})
    request = teacher_request(data=tiny_config.data, teacher=given, seed=0, data_identity=identity(tiny_config, "train", "val"))
    ref = teacher_task.fn(request, tiny_config.runtime)
    assert ref != stored_teacher
    assert store.read_bytes(ref, "model.pt") == store.read_bytes(stored_teacher, "model.pt")


def test_missing_or_foreign_weights_get_one_clear_message(tiny_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="teacher.weights .* does not exist"):
        teacher_request(data=tiny_config.data, teacher=tiny_config.teacher.model_copy(update={"weights": str(tmp_path / "x.pt")}),
                        seed=0, data_identity=identity(tiny_config, "train", "val"))
    foreign = tmp_path / "foreign.pt"
    torch.save({"not": torch.zeros(1)}, foreign)
    request = teacher_request(
        data=tiny_config.data, teacher=tiny_config.teacher.model_copy(update={"weights": str(foreign)}), seed=0,
        data_identity=identity(tiny_config),
    )
    with pytest.raises(ValueError, match=r"teacher.weights .*foreign.pt do not fit teacher.model=convnet on this data set: \S+ \[.*\] is missing from the weights"):
        teacher_task.fn(request, tiny_config.runtime)


def _direct_class_moments(model, images, layer):
    """Mean and biased variance over (N, H, W) of ``layer``'s input, computed in one go."""
    captured = []
    handle = layer.register_forward_pre_hook(lambda _m, args: captured.append(args[0].double()))
    with torch.no_grad():
        model(images)
    handle.remove()
    x = captured[0].transpose(0, 1).flatten(1)  # (C, N*H*W)
    return x.mean(1), x.var(1, unbiased=False)


def test_stored_class_statistics_equal_the_direct_statistic_of_each_class(tiny_config, stored_teacher):
    store = ArtifactStore(tiny_config.runtime.artifact_root)
    stats_config = tiny_config.stats.model_copy(update={"augment": tiny_config.data.augment.model_copy(update={"enabled": False}), "batch_size": 333})
    request = StatsRequest(data=tiny_config.data, data_identity=identity(tiny_config), stats=stats_config, seed=0, inputs={"teacher": stored_teacher})
    stored = read_tensors(store, stats_task.fn(request, tiny_config.runtime), CLASS_BN_STATS)

    model = load_teacher(store, stored_teacher, torch.device("cpu"))
    train = load_split(tiny_config.data, "train")
    norm = normalization(tiny_config.data)
    layers = batchnorm_layers(model)
    assert set(stored) == set(layers)
    for c in (0, 4, 9):
        images = norm.to_input(train.images_at(torch.nonzero(train.labels == c).squeeze(1)))
        for name, layer in layers.items():
            mean, var = _direct_class_moments(model, images, layer)
            torch.testing.assert_close(stored[name]["mean"][c], mean, atol=1e-5, rtol=0)
            torch.testing.assert_close(stored[name]["var"][c], var, atol=1e-5, rtol=0)


def test_class_statistics_do_not_depend_on_batch_size(tiny_config, stored_teacher):
    store = ArtifactStore(tiny_config.runtime.artifact_root)
    model = load_teacher(store, stored_teacher, torch.device("cpu"))
    train = load_split(tiny_config.data, "train")
    norm = normalization(tiny_config.data)
    no_aug = tiny_config.data.augment.model_copy(update={"enabled": False})
    small, large = (
        class_bn_stats(model, train, tiny_config.stats.model_copy(update={"batch_size": b}), augment=no_aug,
                       norm=norm, seed=0, device=torch.device("cpu"))
        for b in (64, 2000)
    )
    for name in small:
        torch.testing.assert_close(small[name]["mean"], large[name]["mean"], atol=1e-10, rtol=0)
        torch.testing.assert_close(small[name]["var"], large[name]["var"], atol=1e-10, rtol=0)


def test_augmented_statistics_differ_from_plain_ones_and_are_seeded(tiny_config, stored_teacher):
    store = ArtifactStore(tiny_config.runtime.artifact_root)
    model = load_teacher(store, stored_teacher, torch.device("cpu"))
    train = load_split(tiny_config.data, "train")
    norm = normalization(tiny_config.data)
    run = lambda augment, seed: class_bn_stats(model, train, tiny_config.stats, augment=augment, norm=norm, seed=seed,  # noqa: E731
                                               device=torch.device("cpu"))
    shared = tiny_config.data.augment  # what the stats stage uses when stats.augment is unset
    augmented, again = run(shared, 0), run(shared, 0)
    plain = run(shared.model_copy(update={"enabled": False}), 0)
    first = next(iter(augmented))
    assert torch.equal(augmented[first]["var"], again[first]["var"])
    assert not torch.allclose(augmented[first]["var"], plain[first]["var"])
