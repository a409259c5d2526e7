"""Stage `synthesize` (recover): IPC images per class, from one of four sources.

* ``lpld``        — class-wise: each batch holds images of ONE class and matches that class's
                    BN statistics (from the `stats` stage). Within-class diversity rises.
* ``sre2l``       — the baseline: each batch holds one image of every class and matches the
                    teacher's global running statistics. Same loop, other batches and targets.
* ``random_real`` — IPC real training images per class, drawn with a seeded permutation.
* ``imported``    — images made elsewhere, read as they are from the class-folder tree at
                    ``synthesis.import_root`` (:mod:`tasks.data.class_folders`) and named by their bytes.

lpld and sre2l run the recovery loop of :mod:`tasks.stages.synthesize.recovery` (BN-statistics matching plus
cross-entropy, Adam, the last iterate stored as uint8). Work is cut into units (a class shard, or an IPC slot in sre2l);
each unit is seeded on its own and saved to ``units/`` as it finishes, so a killed run resumes
at the first missing unit and ends with the same bytes.

    distillery run --until synthesize --set synthesis.mode=sre2l
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from storage.artifacts import ArtifactError, ArtifactRef, ArtifactStore
from storage.file_names import CLASS_BN_STATS, GRID, IMAGES, unit_file
from storage.image_store import grid_png, write_image_store
from storage.tensor_files import read_tensors, write_tensors
from tasks.data import DataConfig, ImageSource, class_sizes, load_split, normalization
from tasks.data.batches import read_images
from tasks.data.class_folders import ImportedImagesError, folder_digest, import_images, scan_class_folders
from tasks.data.identity import SplitIdentity
from tasks.models import load_teacher
from tasks.progress import StageProgress
from tasks.runtime import RuntimeConfig, generator, resolve_device
from tasks.stages.stage_task import StageRun, stage_task, units_in_order
from tasks.stages.synthesize.config import SynthesisConfig, SynthesizeRequest, check_real_images
from tasks.stages.synthesize.diversity import label_agreement, within_class_similarities
from tasks.stages.synthesize.loss_curve import curve_summary
from tasks.stages.synthesize.recovery import bn_targets_for, optimise_unit
from tasks.stages.synthesize.selection import select_class


@dataclass(frozen=True)
class Unit:
    """One resumable piece of work: images at ``positions`` of the final store, with ``labels``."""

    index: int
    labels: tuple[int, ...]
    positions: tuple[int, ...]  # final index = class * ipc + slot


def synthesize_request(
    *, data: DataConfig, synthesis: SynthesisConfig, seed: int, inputs: dict[str, ArtifactRef],
    data_identity: dict[str, SplitIdentity],
) -> SynthesizeRequest:
    """The request for this config; imported images enter the fingerprint by content."""
    digest = None
    if synthesis.mode == "imported":
        folders = scan_class_folders(synthesis.import_root, class_names=load_split(data, "train").class_names,
                                     ipc=synthesis.ipc)
        digest = folder_digest(folders)
    return SynthesizeRequest(data=data, synthesis=synthesis, seed=seed, inputs=inputs, import_digest=digest,
                             data_identity=data_identity)



def plan_units(mode: str, *, num_classes: int, ipc: int, batch_size: int) -> list[Unit]:
    """lpld and random_real: shards of one class. sre2l: per IPC slot, shards of all classes."""
    pieces: list[tuple[list[int], list[int]]] = []
    if mode == "sre2l":
        for slot in range(ipc):
            for start in range(0, num_classes, batch_size):
                classes = list(range(start, min(start + batch_size, num_classes)))
                pieces.append((classes, [c * ipc + slot for c in classes]))
    else:
        for c in range(num_classes):
            for start in range(0, ipc, batch_size):
                slots = range(start, min(start + batch_size, ipc))
                pieces.append(([c] * len(slots), [c * ipc + s for s in slots]))
    return [Unit(i, tuple(labels), tuple(pos)) for i, (labels, pos) in enumerate(pieces)]


def real_picks(train: ImageSource, *, ipc: int, seed: int) -> torch.Tensor:
    """(K, ipc) training-set indices: the first ipc of a seeded permutation of each class."""
    picks = []
    for c in range(train.num_classes):  # every class holds ipc: check_real_images
        members = torch.nonzero(train.labels == c).squeeze(1)
        picks.append(members[torch.randperm(len(members), generator=generator(seed, "real-picks", c))[:ipc]])
    return torch.stack(picks)


def images_digest(images: torch.Tensor) -> str:
    """SHA-256 of a unit's image bytes: saved beside them, so a unit damaged before the stage is
    sealed is found on resume (a flipped pixel still loads)."""
    return hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def unit_real_images(train: ImageSource, picks: torch.Tensor, unit: Unit, ipc: int, *, workers: int = 0) -> torch.Tensor:
    slots = [p % ipc for p in unit.positions]
    return read_images(train, picks[list(unit.labels), slots], workers=workers, device=torch.device("cpu"))  # (B, C, H, W) uint8


class SynthesisJob:
    """One synthesis request's units and what building them needs, loaded once per process.

    The stage entry builds the pending units in order; a scaled-out run maps :meth:`build`
    over them on other workers first (:mod:`tasks.stages.units`). Either way a unit is seeded by its
    index alone and saved whole, so the assembled images are the same bytes.
    """

    def __init__(self, request: SynthesizeRequest, runtime: RuntimeConfig) -> None:
        self.request, self.runtime, config = request, runtime, request.synthesis
        self.store, self.ref, self.device = ArtifactStore(runtime.artifact_root), request.ref(), resolve_device(runtime)
        self.model = load_teacher(self.store, request.inputs["teacher"], self.device)
        self.model.requires_grad_(False)
        self.norm = normalization(request.data)
        self.train = load_split(request.data, "train")
        self.class_stats = read_tensors(self.store, request.inputs["stats"], CLASS_BN_STATS) if "stats" in request.inputs else None
        check_real_images(config, image_size=self.train.image_size, class_sizes=class_sizes(self.train),
                          train_per_class=request.data.train_per_class)
        self.picks = (real_picks(self.train, ipc=config.ipc, seed=request.seed)
                      if config.mode == "random_real" or config.init == "real" else None)
        self.selected: dict[int, torch.Tensor] = {}  # class -> its (ipc, C, H, W) selected images, made once
        self.units = [] if config.mode == "imported" else plan_units(
            config.mode, num_classes=self.train.num_classes, ipc=config.ipc, batch_size=config.batch_size)

    def __len__(self) -> int:
        return len(self.units)

    def pending(self) -> list[int]:
        return [unit.index for unit in self.units if not self.store.exists(self.ref, unit_file(unit.index))]

    def intact(self, index: int) -> bool:
        """Whether saved unit ``index`` loads and its images match the digest saved with them (units
        saved before the digest was added are trusted as they load)."""
        try:
            saved = self.saved(self.units[index])
        except ArtifactError:
            return False
        digest = saved.get("sha256")
        return digest is None or digest == images_digest(saved["images"])

    def build(self, index: int) -> None:
        """Optimise (or pick) unit ``index`` and save it to ``units/``."""
        unit, config, train, device = self.units[index], self.request.synthesis, self.train, self.device
        gen = generator(self.request.seed, "synthesize", config.mode, unit.index)
        if config.mode == "random_real":
            result, unit_losses, curve = unit_real_images(train, self.picks, unit, config.ipc, workers=self.runtime.workers), {}, None
        elif config.mode == "select":
            result, unit_losses, curve = self.selected_images(unit), {}, None
        else:
            if config.init == "real":
                start = self.norm.to_input(unit_real_images(train, self.picks, unit, config.ipc, workers=self.runtime.workers))
            elif config.init == "selected":
                start = self.norm.to_input(self.selected_images(unit))
            else:
                start = torch.randn(len(unit.labels), train.channels, train.image_size, train.image_size, generator=gen)
            result, unit_losses, curve = optimise_unit(
                self.model, start.to(device), torch.tensor(unit.labels, device=device),
                bn_targets_for(config.mode, self.model, self.class_stats, unit.labels[0], device),
                config, crop_scale_min=self.request.data.crop_scale_min_with(config.crop_scale_min),
                flip=self.request.data.augment.flip, norm=self.norm, gen=gen, runtime=self.runtime,
            )
            curve = torch.from_numpy(curve)
        write_tensors(self.store, self.ref, unit_file(unit.index),
                      {"images": result, "losses": unit_losses, "curve": curve, "sha256": images_digest(result)})

    def selected_images(self, unit: Unit) -> torch.Tensor:
        """(B, C, H, W) uint8: the selection's images at the unit's positions (each class selected once)."""
        config = self.request.synthesis
        for label in set(unit.labels) - set(self.selected):
            self.selected[label] = select_class(self.model, self.train, label=label, ipc=config.ipc,
                                                config=config.selection, norm=self.norm, seed=self.request.seed,
                                                device=self.device, workers=self.runtime.workers)
        return torch.stack([self.selected[label][p % config.ipc] for label, p in zip(unit.labels, unit.positions)])

    def saved(self, unit: Unit) -> dict:
        return read_tensors(self.store, self.ref, unit_file(unit.index))


def imported_images(job: SynthesisJob) -> tuple[np.ndarray, np.ndarray]:
    """The images at synthesis.import_root, checked to be the bytes the request was named by."""
    config, train = job.request.synthesis, job.train
    images, labels, digest = import_images(config.import_root, class_names=train.class_names, ipc=config.ipc,
                                           channels=train.channels, image_size=train.image_size,
                                           resize=config.import_resize)
    if digest != job.request.import_digest:
        raise ImportedImagesError(f"the images in {config.import_root} changed after this run named them "
                                  f"({job.request.import_digest} -> {digest}); run again to use the new ones")
    return images, labels


def run_units(job: SynthesisJob) -> tuple[np.ndarray, np.ndarray, dict[int, dict[str, float]], np.ndarray | None]:
    """Every unit not already saved, then the assembled (N, C, H, W) images and labels, the final
    losses per unit and the (units, points, 3) loss curves (None for real images)."""
    config, train = job.request.synthesis, job.train
    progress = StageProgress("synthesize", len(job.units))
    losses: dict[int, dict[str, float]] = {}
    curves = []
    images = np.zeros((train.num_classes * config.ipc, train.channels, train.image_size, train.image_size), np.uint8)
    for index in units_in_order(job, "synthesize"):
        unit = job.units[index]
        saved = job.saved(unit)
        images[list(unit.positions)] = saved["images"].numpy()
        losses[unit.index] = saved["losses"]
        if saved.get("curve") is not None:
            curves.append(saved["curve"].numpy())
        progress(index + 1, f"unit {unit.index} classes {sorted(set(unit.labels))} " + " ".join(f"{k}={v:.4f}" for k, v in saved["losses"].items()))
    labels = np.repeat(np.arange(train.num_classes), config.ipc)
    return images, labels, losses, np.stack(curves) if curves else None


@stage_task("synthesize", tags=("distillery", "compute"))
def synthesize_task(run: StageRun, runtime: RuntimeConfig) -> ArtifactRef:
    request = run.request
    job = SynthesisJob(request, runtime)
    store, ref, teacher_ref, device, model, norm = job.store, job.ref, request.inputs["teacher"], job.device, job.model, job.norm
    if request.synthesis.mode == "imported":
        (images, labels), losses, curves = imported_images(job), {}, None
    else:
        images, labels, losses, curves = run_units(job)
    write_image_store(
        store.url(ref, IMAGES), images, labels, images_per_chunk=request.synthesis.ipc,
        extra_arrays={} if curves is None else {"loss_curve": curves},
        attributes={"mode": request.synthesis.mode, "ipc": request.synthesis.ipc, "num_classes": int(labels.max()) + 1,
                    "teacher": teacher_ref.fingerprint, "config": request.model_dump(mode="json", exclude={"inputs"}),
                    **({"import_digest": request.import_digest} if request.import_digest else {})},
    )
    store.write_bytes(ref, GRID, grid_png(images, per_row=request.synthesis.ipc))
    images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels)
    metrics = {"teacher_agreement": label_agreement(model, images_t, labels_t, norm=norm, device=device)}
    extra: dict[str, object] = {}
    if request.synthesis.ipc > 1:  # one image per class has no within-class pairs to compare
        per_class = within_class_similarities(model, images_t, labels_t, norm=norm, device=device)
        metrics["within_class_similarity"] = float(np.mean(list(per_class.values())))
        extra["within_class_similarity_per_class"] = [per_class[c] for c in sorted(per_class)]
    if curves is not None:
        metrics["mean_final_loss"] = float(np.mean([unit["loss"] for unit in losses.values()]))
        extra["loss_curve"] = curve_summary(curves, request.synthesis.iterations)
        metrics["loss_last_fifth_drop"] = extra["loss_curve"]["last_fifth_drop"]
    run.finish(metrics=metrics, extra={"device": device.type, "unit_losses": {str(k): v for k, v in losses.items()},
                                       "grid": GRID, "images": IMAGES, **extra})
    return ref
