"""Stage `relabel`: the `relabel` config section.

Soft-label generation into the Zarr store is issue #4; this module owns its config so that
presets and the CLI validate it already.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RelabelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    epochs: int = Field(300, ge=1, le=100000, description="E: epochs of soft labels generated.")
    batch_size: int = Field(100, ge=1, le=65536, description="B: images per stored step.")
    label_format: Literal["fp16", "topk"] = Field("fp16", description="How logits are stored.")
    topk: int = Field(3, ge=1, description="k when label_format is topk.")
    cutmix: bool = True
    crop_scale_min: float = Field(0.5, gt=0, le=1)
