"""Teacher weights the user brings: a state-dict file, or a torchvision weights name read from
the local torch hub cache (never downloaded).

    teacher.weights=/models/teacher.pt                             # torch.save(model.state_dict(), path)
    teacher.weights=torchvision:ResNet18_Weights.IMAGENET1K_V1    # <hub dir>/checkpoints/resnet18-f37072fd.pth

A torchvision name also fixes the input the teacher was trained on: 3 channels and the
weights' own mean/std (:func:`pretrained_input`). Every file is loaded with ``weights_only=True``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from tasks.data.config import DataConfig

TORCHVISION = "torchvision:"


class WeightsError(ValueError):
    """Teacher weights that cannot be used; the message names the file and the fix."""


class MissingWeightsError(WeightsError, FileNotFoundError):
    """The weights file (or its torch hub cache entry) is not there."""


@dataclass(frozen=True)
class TorchvisionWeights:
    """One torchvision weights enum member, e.g. ``ResNet18_Weights.IMAGENET1K_V1``."""

    weights: torchvision.models.WeightsEnum

    @property
    def name(self) -> str:
        return f"{type(self.weights).__name__}.{self.weights.name}"

    @property
    def model(self) -> str:
        """The torchvision model these weights belong to (``resnet18``)."""
        return next(m for m in torchvision.models.list_models(module=torchvision.models)
                    if torchvision.models.get_model_weights(m) is type(self.weights))

    @property
    def file(self) -> Path:
        """Where torch hub keeps the file: ``<torch.hub.get_dir()>/checkpoints/<name in the url>``."""
        return Path(torch.hub.get_dir()) / "checkpoints" / PurePosixPath(urlparse(self.weights.url).path).name

    @property
    def num_classes(self) -> int:
        return len(self.weights.meta["categories"])

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        transform = self.weights.transforms()
        return tuple(transform.mean), tuple(transform.std)


def torchvision_weights(spec: str | None) -> TorchvisionWeights | None:
    """The weights a ``torchvision:<Enum>.<MEMBER>`` spec names; None for a file path or None."""
    if spec is None or not spec.startswith(TORCHVISION):
        return None
    name = spec.removeprefix(TORCHVISION)
    try:
        return TorchvisionWeights(torchvision.models.get_weight(name))
    except (KeyError, ValueError, AttributeError):
        raise WeightsError(f"teacher.weights {spec!r}: torchvision has no weights {name!r}; give "
                           "torchvision:<Enum>.<MEMBER>, e.g. torchvision:ResNet18_Weights.IMAGENET1K_V1") from None


def weights_file(spec: str) -> Path:
    """The file ``teacher.weights`` points at, checked to be a readable file."""
    pretrained = torchvision_weights(spec)
    if pretrained is not None:
        if not pretrained.file.is_file():
            raise MissingWeightsError(
                f"teacher.weights {spec} is not in the local torch hub cache and this pipeline never downloads: "
                f"place the file {pretrained.file} (from {pretrained.weights.url}), or set TORCH_HOME to the "
                "folder whose hub/checkpoints holds it")
        return pretrained.file
    path = Path(spec).expanduser()
    if path.is_dir():
        raise WeightsError(f"teacher.weights {spec} is a directory; give the state-dict file inside it "
                           "(saved with torch.save(model.state_dict(), path)), or a name like "
                           "torchvision:ResNet18_Weights.IMAGENET1K_V1")
    if not path.is_file():
        raise MissingWeightsError(f"teacher.weights {spec} does not exist; give a state dict saved with "
                           "torch.save(model.state_dict(), path), or unset teacher.weights to train one")
    return path


def read_state_dict(path: Path, *, origin: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (``weights_only``); WeightsError when it is not one."""
    fix = "give a file saved with torch.save(model.state_dict(), path)"
    with open(path, "rb") as file:
        head = file.read(2)
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":  # torch.save writes a zip; old torch a pickle
        raise WeightsError(f"teacher.weights {origin} is not a PyTorch checkpoint (neither the zip archive "
                           f"torch.save writes nor a pickle); {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle, zip and permission failures all surface differently
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsError(f"teacher.weights {origin} is not a PyTorch checkpoint torch.load can read safely "
                           f"({reason}); {fix}") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        shown = sorted(state)[:5] if isinstance(state, dict) else type(state).__name__
        raise WeightsError(f"teacher.weights {origin} holds {shown}, not a state dict (names -> tensors); save "
                           "model.state_dict() itself, not a training checkpoint or a whole model")
    return state


def first_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """The first tensor (in the model's order) where ``state`` does not fit ``model``, in a few words;
    None when every name and shape matches."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            return f"{name} {list(tensor.shape)} is missing from the weights"
        if state[name].shape != tensor.shape:
            return f"{name} is {list(state[name].shape)} in the weights, {list(tensor.shape)} in the model"
    extra = next((name for name in state if name not in expected), None)
    return None if extra is None else f"{extra} {list(state[extra].shape)} is not in the model"


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], *, origin: str, model_name: str) -> None:
    """Load ``state`` into ``model``; WeightsError naming the first mismatching tensor, in one short line."""
    if mismatch := first_mismatch(model, state):
        raise WeightsError(f"teacher.weights {origin} do not fit teacher.model={model_name} on this data set: "
                           f"{mismatch}; give weights of that architecture, channel count and class count")
    model.load_state_dict(state)


def pretrained_input(data: DataConfig, spec: str | None) -> DataConfig:
    """``data`` as a torchvision teacher needs it: 3 channels and, unless given, the weights' mean/std."""
    pretrained = torchvision_weights(spec)
    if pretrained is None:
        return data
    update: dict[str, object] = {}
    if data.name == "imagefolder" and data.channels is None:
        update["channels"] = 3
    if data.mean is None and data.name != "fashion_mnist":  # 1-channel Fashion-MNIST cannot take these weights anyway
        update["mean"], update["std"] = pretrained.mean_std
    return data.model_copy(update=update) if update else data
