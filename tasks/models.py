"""Model factory: the networks a teacher or student can be, built by name.

* ``convnet``       — ConvNet with BatchNorm: ``depth`` x [conv3x3(width) -> BN -> ReLU -> avgpool2],
                      then a linear classifier. The cheap CPU default for 28-32 px images.
* ``resnet18_small`` — torchvision ResNet-18 with a 3x3 stride-1 stem and no max-pool (28-64 px).
* any other name    — a torchvision classification model (``resnet50``, ``mobilenet_v2``, ...)
                      for large images; its first convolution follows the data set's channels.

Every model is built with channels-last (NHWC) weights, the fast layout for convolutions.

    model = create_model("convnet", channels=1, num_classes=10, image_size=28, width=64, depth=3)
    feats = penultimate_features(model, x)   # (B, D): the classifier's input
    logits = outputs_in_batches(model, images_u8, norm=norm, device=device)   # (N, K), a batch a pass
    teacher = load_teacher(store, teacher_ref, device)   # the `teacher` stage's model, in eval mode
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
import torchvision
from torch import nn

from storage.artifacts import ArtifactError, ArtifactRef, ArtifactStore, rebuild_advice
from storage.file_names import MODEL
from storage.tensor_files import read_tensors
from tasks.normalization import Normalization


class ModelError(ValueError):
    """An unknown model name or a model that cannot take this data."""


class ConvNet(nn.Module):
    def __init__(self, *, channels: int, num_classes: int, image_size: int, width: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch, side = channels, image_size
        for _ in range(depth):
            layers += [
                nn.Conv2d(in_ch, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(2),
            ]
            in_ch, side = width, side // 2
        if side < 1:
            raise ModelError(f"convnet depth {depth} pools a {image_size} px image to nothing")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))  # (B, num_classes)


def _convnet(*, channels: int, num_classes: int, image_size: int, width: int, depth: int) -> nn.Module:
    return ConvNet(channels=channels, num_classes=num_classes, image_size=image_size, width=width, depth=depth)


def _resnet18_small(*, channels: int, num_classes: int, **_: int) -> nn.Module:
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _torchvision(name: str) -> Callable[..., nn.Module]:
    def build(*, channels: int, num_classes: int, **_: int) -> nn.Module:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        if channels != 3:
            _replace_first_conv(model, channels)
        return model

    return build


def _replace_first_conv(model: nn.Module, channels: int) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(
                parent,
                attr,
                nn.Conv2d(
                    channels,
                    module.out_channels,
                    module.kernel_size,
                    stride=module.stride,
                    padding=module.padding,
                    bias=module.bias is not None,
                ),
            )
            return
    raise ModelError(f"{type(model).__name__} has no convolution to adapt to {channels} channels")


MODELS: dict[str, Callable[..., nn.Module]] = {
    "convnet": _convnet,
    "resnet18_small": _resnet18_small,
}


def create_model(
    name: str, *, channels: int, num_classes: int, image_size: int, width: int = 64, depth: int = 3
) -> nn.Module:
    if name in MODELS:
        builder = MODELS[name]
    elif name in torchvision.models.list_models(module=torchvision.models):
        builder = _torchvision(name)
    else:
        known = ", ".join(sorted(MODELS)) + ", or a torchvision classification model"
        raise ModelError(f"unknown model {name!r}; use one of: {known}")
    model = builder(channels=channels, num_classes=num_classes, image_size=image_size, width=width, depth=depth)
    # NHWC weights: oneDNN's CPU convolutions run faster on them (a student step 1.7x, a teacher
    # forward 4.8x on 2 cores; docs/benchmarks.md), and CUDA's tensor-core kernels prefer them
    # under mixed precision. Inputs stay NCHW; the first convolution converts. load_state_dict copies into these strides, so loaded weights keep them.
    return model.to(memory_format=torch.channels_last)


def _classifier(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"{type(model).__name__} has no linear classifier")
    return linears[-1]


def penultimate_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classifier's input for ``x``: ``(B, D)`` teacher features."""
    captured: list[torch.Tensor] = []
    handle = _classifier(model).register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return captured[0].flatten(1)


TEACHER_PASS_BATCH = 1024  # images a forward pass in :func:`outputs_in_batches`


@torch.no_grad()
def outputs_in_batches(model: nn.Module, images_u8: torch.Tensor, *, norm: Normalization, device: torch.device,
                       features: bool = False) -> torch.Tensor:
    """``(N, K)`` logits, or ``(N, D)`` penultimate features when ``features``, of the uint8 ``images_u8``
    in eval mode, float32 on the CPU: ``TEACHER_PASS_BATCH`` images a pass, so a whole real training
    split as an image set does not need its activations all at once."""
    model.eval()
    passes = []
    for start in range(0, len(images_u8), TEACHER_PASS_BATCH):
        x = norm.to_input(images_u8[start : start + TEACHER_PASS_BATCH].to(device))
        passes.append((penultimate_features(model, x) if features else model(x)).float().cpu())
    return torch.cat(passes)


def batchnorm_layers(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer by qualified name, in forward-definition order."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    }


class ModelChoice(Protocol):
    """The fields of a teacher (or student) config that pick its network."""

    model: str
    width: int
    depth: int


class InputShape(Protocol):
    """What a data source says about its images."""

    channels: int
    num_classes: int
    image_size: int


def build_teacher(config: ModelChoice, source: InputShape) -> nn.Module:
    """A fresh teacher of ``config``'s architecture for ``source``'s images and classes."""
    return create_model(config.model, channels=source.channels, num_classes=source.num_classes,
                        image_size=source.image_size, width=config.width, depth=config.depth)


def load_teacher(store: ArtifactStore, ref: ArtifactRef, device: torch.device) -> nn.Module:
    """The teacher stored by the `teacher` stage at ``ref``, on ``device``, in eval mode."""
    manifest = store.read_manifest(ref)
    teacher, shape = manifest["config"]["teacher"], manifest["model_input"]
    model = create_model(teacher["model"], channels=shape["channels"], num_classes=shape["num_classes"],
                         image_size=shape["image_size"], width=teacher["width"], depth=teacher["depth"])
    try:
        model.load_state_dict(read_tensors(store, ref, MODEL))
    except RuntimeError as err:
        raise ArtifactError(f"{store.path(ref, MODEL)} does not fit the teacher its manifest describes ({err}); "
                            f"{rebuild_advice(store.location(ref))}") from None
    return model.to(device).eval()
