"""The `evaluate` config section: the student, its recipe, hard or soft labels; and the request.

    evaluate:
      recipe: small_image   # SGD with warm-up and KL x T^2; or imagenet (AdamW)
      seeds: 3              # students trained; top-1 as mean and std
      labels: soft          # or hard: the baseline on the same images
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from storage.artifacts import StageRequest
from tasks.augment_config import AugmentConfig
from tasks.data import DataConfig
from tasks.data.identity import SplitIdentity


@dataclass(frozen=True)
class Recipe:
    """A student training recipe: optimizer and its settings, warm-up, and the KL's T^2 factor."""

    optimizer: Literal["adamw", "sgd"]
    lr: float
    weight_decay: float
    momentum: float
    warmup_epochs: float
    t_squared: bool


RECIPES = {
    # The reference's ImageNet students: AdamW, cosine, no warm-up, plain KL.
    "imagenet": Recipe(optimizer="adamw", lr=1e-3, weight_decay=0.01, momentum=0.0, warmup_epochs=0, t_squared=False),
    # The reference's small-image (Tiny-ImageNet) students: SGD, 5 warm-up epochs then cosine, KL x T^2.
    "small_image": Recipe(optimizer="sgd", lr=0.2, weight_decay=1e-4, momentum=0.9, warmup_epochs=5, t_squared=True),
}


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str = Field("convnet", description="Student architecture (see tasks.models).")
    width: int = Field(32, ge=4, le=1024, description="convnet channels per layer.")
    depth: int = Field(3, ge=1, le=8, description="convnet conv blocks.")
    seeds: int = Field(3, ge=1, le=100, description="Students trained; top-1 reported as mean ± std.")
    recipe: Literal["small_image", "imagenet"] = Field(
        "small_image", description="small_image: SGD lr 0.2, momentum 0.9, wd 1e-4, 5 warm-up epochs, KL x T^2; "
        "imagenet: AdamW lr 1e-3, wd 0.01, no warm-up, plain KL. The fields below override single settings."
    )
    epochs: int | None = Field(
        None, ge=1, le=100000, description="Epochs of the label stream's steps per epoch; None: the stream's own "
        "E (relabel.epochs), so every stored step is used once at 1x and every ratio gets the same compute."
    )
    lr: float | None = Field(None, gt=0, le=10, description="Peak learning rate; None: the recipe's.")
    weight_decay: float | None = Field(None, ge=0, le=1, description="Weight decay (none on bias/norm); None: the recipe's.")
    warmup_epochs: float | None = Field(None, ge=0, description="Linear warm-up epochs before cosine; None: the recipe's.")
    t_squared: bool | None = Field(None, description="Multiply the KL loss by T^2; None: the recipe's.")
    temperature: float = Field(20.0, gt=0, description="KL distillation temperature T.")
    labels: Literal["soft", "hard"] = Field(
        "soft", description="soft: the stored teacher logits (KL); hard: the images' class labels (cross-entropy, "
        "fresh seeded crops and flips; the baseline, no relabel needed)."
    )
    batch_size: int | None = Field(
        None, ge=1, le=65536, description="Batch size of hard-label training; None: relabel.batch_size, so the "
        "baseline takes as many steps of the same size as the soft-label students."
    )
    augment: AugmentConfig | None = Field(
        None, description="Crops and flips of hard-label training; None: data.augment. (Soft-label students "
        "replay the stored augmentation.)"
    )
    steps: int | None = Field(
        None, ge=1, le=10_000_000, description="For experiments only: optimizer steps per student whatever the "
        "set's size (epochs is then ignored). None: epochs x steps per epoch."
    )
    train_set: Literal["distilled", "full"] = Field(
        "distilled", description="distilled: the synthesized images; full: the whole real training split with hard "
        "labels (the upper reference of DD-Ranking's hard-label recovery; needs labels=hard)."
    )
    also_unpruned: bool = Field(
        False, description="With prune.ratio > 0, also train students on the unpruned labels, so the run shows "
        "what pruning cost side by side (needs relabel.generate=all)."
    )
    alert_drop: float | None = Field(
        None, ge=0, le=1, description="Fail the run when a student group's test top-1 falls more than this (a "
        "fraction, e.g. 0.01) below the previous run of the same deployment (or config) on the same data kind; "
        "None: no check. Read by the flow after the run, never part of the stage's fingerprint."
    )

    @model_validator(mode="after")
    def _full_needs_hard_labels(self) -> EvaluateConfig:
        if self.train_set == "full" and self.labels != "hard":
            raise ValueError("train_set=full trains on real class labels; set evaluate.labels=hard")
        return self

    def for_stream(self, *, epochs: int, batch_size: int) -> EvaluateConfig:
        """The stage's view of this config: the stream's E and B filled in where left to them (None),
        and the flow's alert setting left out (it changes nothing the stage computes)."""
        return self.model_copy(update={"epochs": self.epochs or epochs, "batch_size": self.batch_size or batch_size,
                                       "alert_drop": None})

    def settings(self) -> Recipe:
        """The recipe with this config's overrides applied."""
        base = RECIPES[self.recipe]
        overrides = {name: getattr(self, name) for name in ("lr", "weight_decay", "warmup_epochs", "t_squared")}
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def total_steps(self, steps_per_epoch: int) -> int:
        if self.steps is not None:
            return self.steps
        if self.epochs is None:
            raise ValueError("evaluate.epochs is unresolved; build the request with EvaluateConfig.for_stream")
        return self.epochs * steps_per_epoch


class EvaluateRequest(StageRequest):
    stage = "evaluate"
    code_version = 4  # 4: the teacher's test top-1 beside the students'

    data: DataConfig
    data_identity: dict[str, SplitIdentity]  # the splits read: test (and train for train_set=full)
    evaluate: EvaluateConfig

    @model_validator(mode="after")
    def _stream_resolved(self) -> EvaluateRequest:
        if self.evaluate.batch_size is None or (self.evaluate.epochs is None and self.evaluate.steps is None):
            raise ValueError("evaluate.epochs / batch_size are unresolved; build the request with "
                             "EvaluateConfig.for_stream(epochs=relabel.epochs, batch_size=relabel.batch_size)")
        return self
