"""The `prune` config section, apart from the stage's torch code so that a config loads, and is
refused, without importing torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PruneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    ratio: float = Field(
        0.0, ge=0.0, lt=1.0, description="Fraction of stored steps dropped: 0.9/0.95/0.97/0.975 = 10x/20x/30x/40x."
    )
    rule: Literal["prefix", "uniform", "epoch"] = Field("prefix", description="Which steps are kept.")
