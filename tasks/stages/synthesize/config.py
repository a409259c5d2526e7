"""The `synthesis` config section, the synthesize stage's request, and its errors.

    synthesis:
      mode: lpld          # lpld | sre2l | random_real | imported
      ipc: 10             # images per class
      iterations: 500     # recovery steps per unit (lpld, sre2l)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from storage.artifacts import StageRequest
from tasks.data import DataConfig
from tasks.data.identity import SplitIdentity


class SynthesisError(RuntimeError):
    """Synthesis cannot go on (a NaN loss, too few real images); the message names the fix."""


class SelectionConfig(BaseModel):
    """How mode=select (and init=selected) picks real images of a class with the teacher."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    criterion: Literal["easy", "herding", "kcenter", "kmeans", "stratified", "hardest",
                       "kmeans_logits"] = Field(
        "easy", description="easy (RDED): each candidate's best random crop by the teacher's cross-entropy on the "
        "class, then the class's lowest; herding: greedily toward the class's mean teacher feature; kcenter: "
        "greedy coverage of the class's teacher features; kmeans: the candidate nearest each centre of a seeded "
        "k-means (IPC clusters) of the class's teacher features; stratified (CCS): the candidates the teacher "
        "classifies right, in IPC equal-width bins of its cross-entropy on the class, spread evenly over the bins; "
        "hardest: the IPC right ones of highest cross-entropy on the class; kmeans_logits: kmeans over the "
        "teacher's centred logits instead of its features."
    )
    candidates: int = Field(300, ge=1, le=100000, description="Real training images per class scored (a seeded "
                            "sample; the class's all when it has fewer).")
    factor: int = Field(1, ge=1, le=8, description="easy: f x f selected crops stitched into one image (f = 1: the "
                        "crops are the images); must divide the image size.")
    crops: int = Field(5, ge=1, le=100, description="easy: random-resized crops scored per candidate.")
    crop_scale: float = Field(0.5, gt=0, le=1, description="easy: smallest crop area fraction (crops from it to 1).")


class SynthesisConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    mode: Literal["lpld", "sre2l", "random_real", "select", "imported"] = Field(
        "lpld", description="lpld: one class per batch, per-class BN statistics; sre2l: mixed "
        "batches, global running statistics; random_real: a seeded real subset; select: real images (or "
        "crops) chosen with the teacher (synthesis.selection); imported: the images at import_root, made elsewhere."
    )
    ipc: int = Field(10, ge=1, le=10000, description="Synthetic images per class (imported: the count found).")
    init: Literal["noise", "real", "selected"] = Field(
        "noise", description="lpld and sre2l: start from randn, from a random real subset, or from the images "
        "synthesis.selection picks."
    )
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    sre2l_statistics: Literal["running", "pooled"] = Field(
        "running", description="mode=sre2l: running, the teacher's running BN statistics (as published); pooled, "
        "the exact statistics of the final teacher that lpld matches per class, pooled over all classes (so "
        "class-wise versus global is the only difference from lpld)."
    )
    iterations: int = Field(500, ge=1, le=100000)
    lr: float = Field(0.1, gt=0, le=10, description="Adam learning rate (ImageNet 0.25, Tiny-ImageNet 0.1).")
    r_bn: float = Field(0.05, ge=0, description="Weight of the BN-matching loss (ImageNet 0.01, Tiny 0.05).")
    first_bn_weight: float = Field(10.0, ge=0, description="Weight of the first BN layer (others 1).")
    jitter: int = Field(2, ge=0, le=256, description="Max random roll in pixels (ImageNet 32, Tiny 4).")
    crop_scale_min: float | None = Field(
        None, gt=0, le=1, description="Batch-shared random-resized-crop scale; None: data.augment's."
    )
    batch_size: int = Field(100, ge=1, le=4096, description="Most images optimised together in one unit.")
    import_root: str | None = Field(
        None, description="mode=imported: a folder with one subfolder of images per class, named by the data "
        "set's class names ('/' as '_'), the same number in each (= ipc); fingerprinted by the files' bytes."
    )
    import_resize: bool = Field(
        False, description="mode=imported: resize images of another size to the data set's (shorter side, "
        "centre crop); False refuses them."
    )

    @model_validator(mode="after")
    def _import_fields_fit_mode(self) -> SynthesisConfig:
        if self.mode == "imported" and self.import_root is None:
            raise ValueError("synthesis.mode=imported reads synthesis.import_root: set it to the folder of class folders")
        if self.mode in ("imported", "random_real", "select") and self.init != "noise":
            raise ValueError(f"synthesis.init applies to lpld and sre2l; remove it for mode={self.mode}")
        if self.sre2l_statistics == "pooled" and self.mode != "sre2l":
            raise ValueError(f"synthesis.sre2l_statistics=pooled applies to mode=sre2l (mode is {self.mode}); remove it")
        if self.mode != "imported" and (self.import_root is not None or self.import_resize):
            raise ValueError(f"synthesis.import_root and import_resize apply only to mode=imported (mode is "
                             f"{self.mode}); remove them or set synthesis.mode=imported")
        return self


def real_images_needed(config: SynthesisConfig) -> int:
    """Real training images every class must hold for ``config``: 0 when it reads none."""
    if config.mode == "select" or config.init == "selected":
        return config.ipc * config.selection.factor**2
    return config.ipc if config.mode == "random_real" or config.init == "real" else 0


def check_real_images(config: SynthesisConfig, *, image_size: int, class_sizes: dict[str, int],
                      train_per_class: int | None = None) -> None:
    """SynthesisError naming the setting when ``config`` asks more of the training split than it holds:
    a selection factor that does not divide the images, or a class with fewer real images than the
    mode picks (``class_sizes``: each class's training images; ``train_per_class``: the cut that made
    them, named in the fix when it is what binds)."""
    selects = config.mode == "select" or config.init == "selected"
    if selects and image_size % config.selection.factor:
        divisors = [f for f in range(1, 9) if image_size % f == 0]
        raise SynthesisError(f"synthesis.selection.factor={config.selection.factor} does not divide the {image_size} "
                             f"px images; use one of {divisors}")
    needed = real_images_needed(config)
    short = {name: n for name, n in class_sizes.items() if n < needed}
    if not short:
        return
    name, n = next(iter(short.items()))
    fix = "lower synthesis.ipc" + (" or the factor" if selects else "")
    if train_per_class is not None and n >= train_per_class:
        fix += ", or raise data.train_per_class"
    many = f" ({len(short)} classes short)" if len(short) > 1 else ""
    if selects:
        raise SynthesisError(f"synthesis.ipc={config.ipc} with selection.factor={config.selection.factor} needs "
                             f"{needed} real images of every class, but class {name} has {n} training images{many}; {fix}")
    raise SynthesisError(f"synthesis.ipc={config.ipc} exceeds the {n} training images of class {name}{many}; {fix}")


class SynthesizeRequest(StageRequest):
    stage = "synthesize"
    code_version = 2  # 2: loss curves stored; crop and flip from data.augment

    data: DataConfig
    data_identity: dict[str, SplitIdentity]  # the train split read (real images, class names)
    synthesis: SynthesisConfig
    import_digest: str | None = None  # mode=imported: the content hash of the files (tasks.data.class_folders)

    def fingerprint(self) -> str:
        # Imported images are named by their bytes (import_digest), not by the folder they lie in.
        if self.synthesis.import_root is None:
            return super().fingerprint()
        anywhere = self.synthesis.model_copy(update={"import_root": None})
        return StageRequest.fingerprint(self.model_copy(update={"synthesis": anywhere}))
