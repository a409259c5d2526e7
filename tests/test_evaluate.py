"""The evaluate stage on real Fashion-MNIST slices: the loss, the optimiser, students, refusals."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from flows.config import ConfigError, resolve_config
from storage.artifacts import ArtifactStore
from storage.softlabels import SoftLabelStoreError
from tasks.stages.evaluate import (EvaluateConfig, EvaluateRequest, create_optimizer, evaluate_task,
                                   soft_label_loss, student_lr)
from tasks.models import create_model
from tasks.stages.relabel import relabel_request
from tasks.stages.synthesize import SynthesizeRequest
from tasks.stages.teacher import teacher_request
from tests.tiny_artifacts import identity
from tests.conftest import needs_fashion_mnist

pytestmark = needs_fashion_mnist
OVERRIDES = ["synthesis.mode=random_real", "synthesis.ipc=10", "relabel.batch_size=20", "relabel.epochs=10",
             "evaluate.epochs=60", "evaluate.lr=0.01", "evaluate.seeds=2"]


def test_the_loss_is_kl_at_temperature_t_and_zero_for_the_teachers_own_logits():
    teacher, student = torch.randn(5, 10) * 4, torch.randn(5, 10) * 4
    config = EvaluateConfig(temperature=4.0, t_squared=False)
    expected = (F.softmax(teacher / 4, 1) * (F.log_softmax(teacher / 4, 1) - F.log_softmax(student / 4, 1))).sum(1).mean()
    assert soft_label_loss(student, teacher, config).item() == pytest.approx(expected.item(), rel=1e-5)
    assert soft_label_loss(teacher, teacher, config).item() == pytest.approx(0.0, abs=1e-6)
    squared = EvaluateConfig(temperature=4.0, t_squared=True)
    assert soft_label_loss(student, teacher, squared).item() == pytest.approx(16 * expected.item(), rel=1e-5)


@pytest.mark.parametrize("recipe, kind, lr", [("imagenet", torch.optim.AdamW, 1e-3), ("small_image", torch.optim.SGD, 0.2)])
def test_no_weight_decay_on_biases_and_batchnorm(recipe, kind, lr):
    model = create_model("convnet", channels=1, num_classes=10, image_size=28, width=8, depth=2)
    optimizer = create_optimizer(model, EvaluateConfig(recipe=recipe, weight_decay=0.05))
    groups = optimizer.param_groups
    assert isinstance(optimizer, kind) and groups[0]["lr"] == lr
    norm_params = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert groups[0]["weight_decay"] == 0.05 and all(p.ndim > 1 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0.0 and norm_params <= {id(p) for p in groups[1]["params"]}
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))


def test_the_decay_rule_goes_by_module_type_not_tensor_rank():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model[1].weight = torch.nn.Parameter(torch.ones(1, 4))  # a 2-d norm weight: a rank rule would decay it
    decay, rest = create_optimizer(model, EvaluateConfig(recipe="imagenet")).param_groups
    assert [tuple(p.shape) for p in decay["params"]] == [(4, 4)]
    assert sorted(tuple(p.shape) for p in rest["params"]) == [(1, 4), (4,), (4,)]


def test_students_train_the_streams_epochs_by_default_and_the_small_image_recipe_warms_up():
    config = resolve_config(preset="fashion_mnist")
    student = _resolved(config)
    assert (student.epochs, student.batch_size) == (config.relabel.epochs, config.relabel.batch_size) == (1500, 25)
    assert student.total_steps(4) == 6000  # IPC 10, batch 25: every stored step once at 1x
    assert _resolved(resolve_config(preset="fashion_mnist", overrides=["evaluate.epochs=7"])).epochs == 7
    model = create_model("convnet", channels=1, num_classes=10, image_size=28, width=8, depth=2)
    reference = student.model_copy(update={"recipe": "small_image", "lr": None})  # the recipe's own lr, 0.2
    optimizer = create_optimizer(model, reference)
    schedule = student_lr(reference, total=1200, steps_per_epoch=4)
    rates = []
    for step in range(1200):
        schedule.set(optimizer, step)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[0] == pytest.approx(0.2 / 20) and rates[19] == pytest.approx(0.2)  # 5 epochs x 4 steps of warm-up
    assert all(a >= b for a, b in zip(rates[19:], rates[20:])) and rates[-1] < 1e-5
    with pytest.raises(ValueError, match="unresolved; build the request with EvaluateConfig.for_stream"):
        EvaluateRequest(data=config.data, data_identity=identity(config, "test"), evaluate=config.evaluate, seed=0)


def _resolved(config) -> EvaluateConfig:
    return config.evaluate.for_stream(epochs=config.relabel.epochs, batch_size=config.relabel.batch_size)


def _pipeline(tiny_artifacts, root: Path, *extra: str):
    """Teacher, random-real images and their soft labels for this config: the session's, copied into ``root``."""
    config = resolve_config(preset="ci_tiny", artifact_root=str(root), overrides=[*OVERRIDES, *extra])
    teacher, images, labels = tiny_artifacts.copy_into(root, *OVERRIDES, *extra, until="relabel")
    assert teacher == teacher_request(data=config.data, teacher=config.teacher, seed=0, data_identity=identity(config, "train", "val")).ref()
    assert images == SynthesizeRequest(data=config.data, data_identity=identity(config), synthesis=config.synthesis, seed=0, inputs={"teacher": teacher}).ref()
    assert labels == relabel_request(data=config.data, relabel=config.relabel, prune_ratio=0.0, prune_rule="prefix",
                                     seed=0, teacher=teacher, images=images).ref()
    return config, {"teacher": teacher, "images": images, "labels": labels}


@pytest.mark.slow  # five students of 300 steps: the suite's longest in-process test
def test_students_learn_from_soft_labels_deterministically_and_resume_by_seed(tmp_path, tiny_artifacts):
    config, inputs = _pipeline(tiny_artifacts, tmp_path / "a")
    request = EvaluateRequest(data=config.data, data_identity=identity(config, "test"), evaluate=_resolved(config), seed=0,
                              inputs=inputs)
    ref = evaluate_task.fn(request, config.runtime)
    store = ArtifactStore(config.runtime.artifact_root)
    manifest = store.read_manifest(ref)
    per_seed = manifest["test_top1_per_seed"]
    assert len(per_seed) == 2 and manifest["metrics"]["test_top1"] == pytest.approx(sum(per_seed) / 2)
    # ci_tiny's teacher is one epoch on 1,800 images (about 0.37 on test): the students are judged against it.
    teacher_top1 = manifest["metrics"]["teacher_test_top1"]
    assert teacher_top1 > 0.25, "the ci_tiny teacher should be far above chance (0.1)"
    assert min(per_seed) > 0.8 * teacher_top1, "100 real images with the teacher's soft labels should come near the teacher"
    assert manifest["metrics"]["test_top1_std"] == pytest.approx(statistics.stdev(per_seed))

    # Same config in another root: the same students, to the byte.
    shutil.copytree(tmp_path / "a", tmp_path / "b", ignore=shutil.ignore_patterns("evaluate"))
    other = config.model_copy(update={"runtime": config.runtime.model_copy(update={"artifact_root": str(tmp_path / "b")})})
    evaluate_task.fn(request, other.runtime)
    seed_files = sorted((tmp_path / "a" / "evaluate" / ref.fingerprint / "seeds").iterdir())
    assert [p.read_bytes() for p in seed_files] == [
        (tmp_path / "b" / "evaluate" / ref.fingerprint / "seeds" / p.name).read_bytes() for p in seed_files
    ]

    # A run stopped after seed 0: only seed 1 is trained again, with the same result.
    run_dir = tmp_path / "b" / "evaluate" / ref.fingerprint
    (run_dir / "manifest.json").unlink()
    (run_dir / "seeds" / "seed-001.json").unlink()
    evaluate_task.fn(request, other.runtime)
    assert json.loads((run_dir / "manifest.json").read_text())["test_top1_per_seed"] == per_seed


def test_labels_made_for_other_images_are_refused_naming_both(tmp_path, tiny_artifacts):
    config, inputs = _pipeline(tiny_artifacts, tmp_path / "a")
    _, other = _pipeline(tiny_artifacts, tmp_path / "a", "synthesis.ipc=11")
    request = EvaluateRequest(data=config.data, data_identity=identity(config, "test"), evaluate=_resolved(config), seed=0,
                              inputs={**inputs, "images": other["images"]})
    with pytest.raises(SoftLabelStoreError, match=f"made from images {inputs['images'].fingerprint}, but this run uses "
                                                  f"images {other['images'].fingerprint}"):
        evaluate_task.fn(request, config.runtime)


def test_the_hard_label_baseline_trains_on_class_labels_alone(tmp_path, tiny_artifacts):
    config, inputs = _pipeline(tiny_artifacts, tmp_path / "a", "evaluate.labels=hard")
    hard_inputs = {"teacher": inputs["teacher"], "images": inputs["images"]}
    request = EvaluateRequest(data=config.data, data_identity=identity(config, "test"), evaluate=_resolved(config), seed=0,
                              inputs=hard_inputs)
    manifest = ArtifactStore(config.runtime.artifact_root).read_manifest(evaluate_task.fn(request, config.runtime))
    assert manifest["metrics"]["label_steps"] == 0 and manifest["metrics"]["labels_store_bytes"] == 0
    assert min(manifest["test_top1_per_seed"]) > 0.4  # 100 real images, hard labels: far above chance (0.1)
    with pytest.raises(ValueError, match=r"labels=hard, train_set=distilled\) got inputs \['images', 'labels', 'teacher'\]"):
        evaluate_task.fn(request.model_copy(update={"inputs": inputs}), config.runtime)


def test_a_step_budget_fixes_student_compute_whatever_the_set_size(tmp_path, tiny_artifacts):
    config, inputs = _pipeline(tiny_artifacts, tmp_path / "a", "evaluate.steps=7", "evaluate.seeds=1")
    store = ArtifactStore(config.runtime.artifact_root)
    soft = EvaluateRequest(data=config.data, data_identity=identity(config, "test"), evaluate=_resolved(config), seed=0,
                           inputs=inputs)
    assert store.read_manifest(evaluate_task.fn(soft, config.runtime))["metrics"]["student_steps"] == 7
    hard = EvaluateRequest(data=config.data, data_identity=identity(config, "test"),
                           evaluate=_resolved(config).model_copy(update={"labels": "hard"}), seed=0,
                           inputs={"teacher": inputs["teacher"], "images": inputs["images"]})
    assert store.read_manifest(evaluate_task.fn(hard, config.runtime))["metrics"]["student_steps"] == 7
    by_epochs = config.evaluate.model_copy(update={"steps": None})
    assert by_epochs.total_steps(5) == 60 * 5  # without a budget: epochs x steps per epoch


def test_the_full_data_reference_trains_on_the_whole_real_split_without_images(tmp_path, tiny_artifacts):
    config = resolve_config(preset="ci_tiny", artifact_root=str(tmp_path),
                            overrides=["evaluate.train_set=full", "evaluate.labels=hard", "evaluate.steps=40",
                                       "evaluate.lr=0.01", "evaluate.seeds=1", "evaluate.batch_size=100"])
    [teacher] = tiny_artifacts.copy_into(tmp_path, until="teacher")
    request = EvaluateRequest(data=config.data, data_identity=identity(config, "test", "train"), evaluate=_resolved(config),
                              seed=0, inputs={"teacher": teacher})
    manifest = ArtifactStore(str(tmp_path)).read_manifest(evaluate_task.fn(request, config.runtime))
    assert manifest["metrics"]["images_store_bytes"] == 0 and manifest["metrics"]["student_steps"] == 40
    assert manifest["metrics"]["test_top1"] > 0.5  # 2,000 real images (ci_tiny), 40 steps of 100: far above chance
    with pytest.raises(ConfigError, match="train_set=full trains on real class labels; set evaluate.labels=hard"):
        resolve_config(preset="ci_tiny", overrides=["evaluate.train_set=full"])
