"""The names of the files inside artifacts and export folders, in one place.

A stage that reads another stage's output finds it here, not by importing that stage:

    teacher/<fp>/model.pt               MODEL             the teacher's state dict
    stats/<fp>/class_bn_stats.pt        CLASS_BN_STATS    per-class BatchNorm moments
    synthesize/<fp>/images.zarr         IMAGES            the image store (storage.image_store)
    synthesize/<fp>/grid.png            GRID              the images as one picture, a row per class (its first 50)
    synthesize/<fp>/units/unit-00003.pt unit_file(3)      one finished synthesis unit (resume)
    relabel|prune/<fp>/labels.zarr      LABELS            the soft-label store (storage.softlabels)
    evaluate/<fp>/seeds/seed-001.json   seed_file(1)      one finished student (resume)

An export folder (`distillery export --to DIR`) holds EXPORT_IMAGES/<class>/*.png,
EXPORT_LABELS, CARD_JSON and CARD_MD.
"""

from __future__ import annotations

MODEL = "model.pt"
CLASS_BN_STATS = "class_bn_stats.pt"
IMAGES = "images.zarr"
GRID = "grid.png"
LABELS = "labels.zarr"

EXPORT_IMAGES = "images"
EXPORT_LABELS = LABELS
CARD_JSON = "card.json"
CARD_MD = "card.md"


def unit_file(index: int) -> str:
    """A finished synthesis unit, saved whole so a killed run resumes after it."""
    return f"units/unit-{index:05d}.pt"


def seed_file(index: int) -> str:
    """A finished student's seed and top-1, saved whole so a killed run resumes after it."""
    return f"seeds/seed-{index:03d}.json"
