"""The augmentation settings (``data.augment``, ``teacher.augment``, ...), apart from the tensor code
in :mod:`tasks.augment` so that a config loads, and is refused, without importing torch."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AugmentConfig(BaseModel):
    """Training augmentation: random-resized-crop with this area scale, optional flip."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    enabled: bool = True
    crop_scale_min: float = Field(0.5, gt=0.0, le=1.0, description="Smallest crop area fraction.")
    crop_scale_max: float = Field(1.0, gt=0.0, le=1.0, description="Largest crop area fraction.")
    flip: bool = True

    @model_validator(mode="after")
    def _scale_ordered(self) -> "AugmentConfig":
        if self.crop_scale_min > self.crop_scale_max:
            raise ValueError(
                f"crop_scale_min ({self.crop_scale_min}) must not exceed "
                f"crop_scale_max ({self.crop_scale_max})"
            )
        return self
