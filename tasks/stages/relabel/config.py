"""The `relabel` config section, apart from the stage's torch code so that a config loads, and is
refused, without importing torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from storage.label_codec import LabelFormat


class RelabelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    epochs: int = Field(300, ge=1, le=100000, description="E: epochs of soft labels generated.")
    batch_size: int = Field(100, ge=1, le=65536, description="B: images per stored step.")
    label_format: LabelFormat = Field(
        "fp16", description="fp16 logits; topk values + int16 indices + the mean of the rest; "
        "prob8: softmax(logits / label_temperature) as uint8; logit8: each logit below its row's maximum as "
        "uint8, on a per-step scale (no temperature baked in); logp8: each log-probability at label_temperature "
        "below its row's largest, in 1/50-nat uint8 levels."
    )
    topk: int = Field(3, ge=1, description="k when label_format is topk.")
    label_temperature: float = Field(20.0, gt=0, description="T of the prob8 and logp8 formats (the student's T).")
    augmentation: Literal["boxes", "seed", "stream"] = Field(
        "boxes", description="boxes: store each step's image indices, crop boxes, flips and CutMix fields; seed: "
        "the indices and a per-step augmentation seed; stream: neither (both regenerated from the stream's seed "
        "and the step's position): the labels and a step id alone."
    )
    cutmix: bool = True
    crop_scale_min: float | None = Field(None, gt=0, le=1, description="Crop scale of the steps; None: data.augment's.")
    generate: Literal["all", "kept"] = Field(
        "all", description="kept: with prune.rule=prefix, generate only the steps the prune keeps."
    )
    chunk_steps: int | None = Field(None, ge=1, description="Steps per chunk (the resume unit); None: the fewest "
                                    "steps filling ~1 MB, but at most ceil(S/8) of the store's S steps (12 steps: 6 "
                                    "chunks of 2), so a stop keeps all but the chunk in progress.")
