"""The `teacher` config section, apart from the stage's torch code so that a config loads, and is
refused, without importing torch."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.augment_config import AugmentConfig


class TeacherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str = Field("convnet", description="convnet, resnet18_small or a torchvision model name.")
    width: int = Field(32, ge=4, le=1024, description="convnet channels per layer.")
    depth: int = Field(3, ge=1, le=8, description="convnet conv blocks.")
    epochs: int = Field(6, ge=1, le=1000)
    batch_size: int = Field(256, ge=1, le=65536)
    lr: float = Field(0.2, gt=0, le=10, description="Peak SGD learning rate (reference: 0.2).")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    warmup_epochs: float = Field(
        0.5, ge=0, description="Linear warm-up before cosine decay (reference: 5 of 200 epochs)."
    )
    augment: AugmentConfig | None = Field(None, description="Training augmentation; None: data.augment.")
    seed: int | None = Field(
        None, ge=0, description="The teacher's own seed (and its class statistics'); None: runtime.seed. Set, one "
        "teacher is shared by every run seed: replicates then differ in everything after it."
    )
    weights: str | None = Field(
        None, description="Use these weights instead of training: a state-dict file (loaded weights_only), or "
        "torchvision:<Enum>.<MEMBER> (e.g. torchvision:ResNet18_Weights.IMAGENET1K_V1) read from the local torch "
        "hub cache, never downloaded."
    )

    @model_validator(mode="after")
    def _warmup_fits(self) -> "TeacherConfig":
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) is longer than epochs ({self.epochs}); "
                "lower teacher.warmup_epochs"
            )
        return self

    @model_validator(mode="after")
    def _torchvision_weights_fit_model(self) -> "TeacherConfig":
        if self.weights is None or not self.weights.startswith("torchvision:"):  # tasks.pretrained.TORCHVISION
            return self
        from tasks.pretrained import torchvision_weights  # imports torchvision: only for weights it names

        pretrained = torchvision_weights(self.weights)
        if pretrained is not None and pretrained.model != self.model:
            raise ValueError(f"teacher.weights {pretrained.name} are weights of {pretrained.model}, but "
                             f"teacher.model is {self.model!r}; set teacher.model={pretrained.model}")
        return self
