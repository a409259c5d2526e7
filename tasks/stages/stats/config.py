"""The `stats` config section, apart from the stage's torch code so that a config loads, and is
refused, without importing torch."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tasks.augment_config import AugmentConfig


class StatsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    augment: AugmentConfig | None = Field(
        None, description="Training augmentation applied during the pass; None: data.augment (what synthesis "
        "matches under)."
    )
    passes: int = Field(1, ge=1, le=100, description="Passes over the training set (new augmentation each).")
    batch_size: int = Field(500, ge=1, le=65536, description="Speed only: sums are exact.")
