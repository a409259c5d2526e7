"""Teachers the user brings (issue 16 item 3): a torchvision weights name read from the local torch
hub cache (never downloaded), state-dict files, and one clear message for each file that is not one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from flows.cli import main
from flows.config import ConfigError, resolve_config
from flows.without_prefect import run_plain
from storage.artifacts import ArtifactStore
from storage.file_names import MODEL as MODEL_FILE
from tasks.data import DataConfig, load_split, normalization
from tasks.models import load_teacher
from tasks.pretrained import torchvision_weights
from tasks.training import top1_accuracy

RESNET18 = "torchvision:ResNet18_Weights.IMAGENET1K_V1"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache of the test's own (TORCH_HOME), as on a machine that has downloaded nothing."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def imagenet_layout(tmp_path_factory) -> Path:
    """1000 class folders (as ImageNet's wnids sort), one 24x24 RGB JPEG each in train/ and val/, and
    four more val images of the first class: 1004 test images."""
    root = tmp_path_factory.mktemp("imagenet-layout")
    for k in range(1000):
        for split, count in (("train", 1), ("val", 5 if k == 0 else 1)):
            folder = root / split / f"n{k:08d}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (24, 24), (k % 256, (k * 7) % 256, i * 40)).save(folder / f"{i}.JPEG")
    return root


def _always_first_class(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """ResNet-18 weights whose classifier answers class 0 for every image."""
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.bias[0] = 1.0
    return model.state_dict()


def test_torchvision_weights_name_is_read_from_the_hub_cache_and_scored(hub_cache, imagenet_layout, tmp_path):
    cached = hub_cache / "resnet18-f37072fd.pth"  # the file name in ResNet18_Weights.IMAGENET1K_V1.url
    cached.parent.mkdir(parents=True)
    weights = _always_first_class(torchvision.models.resnet18(weights=None))
    torch.save(weights, cached)
    config = resolve_config(preset="ci_tiny", artifact_root=str(tmp_path / "a"), overrides=[
        "data.name=imagefolder", f"data.root={imagenet_layout}", "data.image_size=16", "data.train_per_class=null",
        "data.test_limit=null", "data.val_fraction=0", "teacher.model=resnet18", f"teacher.weights={RESNET18}"])

    [teacher] = run_plain(config, until="teacher")  # the weights' own normalisation: nothing to measure

    store = ArtifactStore(config.runtime.artifact_root)
    manifest = store.read_manifest(teacher.ref)
    model, data = load_teacher(store, teacher.ref, torch.device("cpu")), DataConfig(**manifest["config"]["data"])
    test_top1 = top1_accuracy(model, load_split(data, "test"), norm=normalization(data), device=torch.device("cpu"))
    assert test_top1 == pytest.approx(5 / 1004)  # class 0's five images, all others wrong
    assert manifest["epoch_losses"] == []  # loaded, not trained
    assert manifest["model_input"] == {"channels": 3, "num_classes": 1000, "image_size": 16}
    assert manifest["config"]["data"]["mean"] == [0.485, 0.456, 0.406]
    assert manifest["config"]["data"]["std"] == [0.229, 0.224, 0.225]
    stored = torch.load(store.path(teacher.ref, MODEL_FILE), weights_only=True)
    assert all(torch.equal(stored[name], tensor) for name, tensor in weights.items())


def test_weights_name_that_is_not_cached_names_the_file_to_place(hub_cache, tmp_path, capsys):
    expected = hub_cache / "resnet18-f37072fd.pth"
    assert torchvision_weights(RESNET18).file == expected

    code = main(["run", "--preset", "ci_tiny", "--artifact-root", str(tmp_path / "a"),
                 "--set", "teacher.model=resnet18", "--set", f"teacher.weights={RESNET18}"])

    err = capsys.readouterr().err
    assert code == 2
    assert f"place the file {expected}" in err and "download.pytorch.org/models/resnet18-f37072fd.pth" in err
    assert not (tmp_path / "a").exists()  # refused before anything was stored


@pytest.mark.parametrize("weights, message", [
    ("/etc/passwd", "teacher.weights /etc/passwd is not a PyTorch checkpoint (neither the zip archive"),
    ("{tmp}", "teacher.weights {tmp} is a directory; give the state-dict file inside it"),
    ("{tmp}/missing.pt", "teacher.weights {tmp}/missing.pt does not exist"),
    ("{tmp}/checkpoint.pt", "holds ['epoch', 'model'], not a state dict"),
])
def test_a_weights_file_that_is_no_state_dict_gets_one_message_naming_the_problem(weights, message, tmp_path, capsys):
    torch.save({"epoch": 3, "model": {"w": torch.zeros(1)}}, tmp_path / "checkpoint.pt")  # a training checkpoint
    weights, message = weights.format(tmp=tmp_path), message.format(tmp=tmp_path)

    code = main(["run", "--preset", "ci_tiny", "--artifact-root", str(tmp_path / "a"), "--set", f"teacher.weights={weights}"])

    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "list index out of range" not in err and err.count("\n") == 1  # one line


def test_torchvision_weights_of_another_model_or_unknown_name_are_config_errors():
    with pytest.raises(ConfigError, match="are weights of resnet18, but teacher.model is 'convnet'; set teacher.model=resnet18"):
        resolve_config(preset="ci_tiny", overrides=[f"teacher.weights={RESNET18}"])
    with pytest.raises(ConfigError, match="torchvision has no weights 'ResNet18_Weights.NOPE'"):
        resolve_config(preset="ci_tiny", overrides=["teacher.model=resnet18",
                                                    "teacher.weights=torchvision:ResNet18_Weights.NOPE"])
