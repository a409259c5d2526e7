"""Stage `synthesize` (recover): the `synthesis` config section.

The synthesis loop itself (class-wise LPLD, the SRe2L mode and the random-real baseline) is
issue #3; this module owns its config so that presets and the CLI validate it already.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SynthesisConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["lpld", "sre2l", "random_real"] = Field(
        "lpld", description="lpld: one class per batch, per-class BN statistics; sre2l: mixed "
        "batches, global running statistics; random_real: a seeded real subset."
    )
    ipc: int = Field(10, ge=1, le=10000, description="Synthetic images per class.")
    init: Literal["noise", "real"] = Field("noise", description="Start from randn or from real images.")
    iterations: int = Field(1000, ge=1, le=100000)
    lr: float = Field(0.1, gt=0, le=10, description="Adam learning rate (ImageNet 0.25, Tiny 0.1).")
    r_bn: float = Field(0.05, ge=0, description="Weight of the BN-matching loss.")
    first_bn_weight: float = Field(10.0, ge=0, description="Extra weight of the first BN layer.")
    jitter: int = Field(2, ge=0, description="Max random roll in pixels (ImageNet 32, Tiny 4).")
    crop_scale_min: float = Field(0.5, gt=0, le=1, description="Batch-shared random-resized-crop scale.")
