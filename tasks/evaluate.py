"""Stage `evaluate`: the `evaluate` config section.

Student training and the baselines are issue #5; this module owns its config so that presets
and the CLI validate it already.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str = Field("convnet", description="Student architecture (see tasks.models).")
    seeds: int = Field(3, ge=1, le=100, description="Students trained; top-1 reported as mean ± std.")
    epochs: int = Field(300, ge=1, le=100000)
    lr: float = Field(1e-3, gt=0, le=10, description="AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay (none on bias/BN).")
    temperature: float = Field(20.0, gt=0, description="KL distillation temperature T.")
    t_squared: bool = Field(False, description="Multiply the KL loss by T^2.")
