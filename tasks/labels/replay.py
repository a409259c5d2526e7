"""Train your own student from a soft-label store: each step's replayed batch and its teacher logits.

The public way to use a distilled set outside this pipeline, and the one replay path of the
`evaluate` stage. A :class:`ReplayedSteps` yields one :class:`StudentStep` per optimizer step:
the stored images of the step, replayed through the stored crop / flip / CutMix exactly as the
teacher saw them (normalised floats, on the images' device), and the teacher's logits for them.
Its epochs are drawn as evaluate draws them (:func:`training_schedule`), as the reference does: an
unpruned store is replayed as stored, each epoch the stream's next steps in order (every stored
step once per E epochs); a pruned store gives each epoch the stream's steps-per-epoch steps drawn
uniformly with replacement from the kept pool, seeded by ``seed``, so it still gives E full
epochs.

    steps = ReplayedSteps.from_export("distilled", seed=0)   # after `distillery export --to distilled`
    for step in steps:                                      # len(steps) = epochs x steps per epoch
        loss = kl_loss(student(step.images), step.teacher_logits)   # (B, C, H, W) -> (B, K)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem
from torch.utils.data import IterableDataset

from storage.artifacts import tree_checksums
from storage.file_names import CARD_JSON, CARD_MD, EXPORT_IMAGES, EXPORT_LABELS
from storage.softlabels import SoftLabelReader, SoftLabelStoreError
from storage.verify import file_problems
from tasks.data.class_folders import decode_class_folders, scan_class_folders
from tasks.labels.stream import StreamGeometry, apply_augmentation, stored_augmentation, stored_images
from tasks.normalization import Normalization
from tasks.runtime import generator


def training_schedule(num_kept: int, *, steps_per_epoch: int, epochs: int, seed: int, stream_steps: int) -> np.ndarray:
    """(epochs, steps_per_epoch) store rows. Unpruned (``num_kept == stream_steps``): the stored steps
    in stream order, every one once, starting over after the last. Pruned: each epoch draws
    uniformly with replacement from the kept pool."""
    if num_kept == stream_steps:
        return (np.arange(epochs * steps_per_epoch) % num_kept).reshape(epochs, steps_per_epoch)
    gen = generator(seed, "prune", "schedule")
    return torch.randint(0, num_kept, (epochs, steps_per_epoch), generator=gen).numpy()


@dataclass(frozen=True)
class StudentStep:
    """One optimizer step of a student."""

    images: torch.Tensor  # (B, C, H, W) float32: normalised, cropped, flipped and CutMixed as the teacher saw them
    teacher_logits: torch.Tensor  # (B, K) float32: the teacher's logits for exactly these images
    index: int  # position in the schedule, 0 .. len - 1 (for a learning-rate schedule)
    epoch: int
    stored_step: int  # row of the soft-label store replayed


class ReplayedSteps(IterableDataset):
    """The steps a student trains on, from ``images`` (N, C, H, W), normalised, and the ``labels`` store.

    ``epochs`` defaults to the store's E; ``steps`` (if given) cuts the schedule to that many
    steps. Iterating again replays the same steps. It is an ``IterableDataset`` of whole
    batches: iterate it directly, or wrap it as ``DataLoader(steps, batch_size=None)``.
    """

    def __init__(self, images: torch.Tensor, labels: SoftLabelReader, *, seed: int, epochs: int | None = None,
                 steps: int | None = None) -> None:
        attrs = labels.attrs
        if len(images) != attrs["num_images"] or images.shape[-1] != attrs["image_size"]:
            raise SoftLabelStoreError(
                f"soft-label store {labels.url} labels {attrs['num_images']} images of {attrs['image_size']} px, "
                f"got {len(images)} of {images.shape[-1]} px; give the image set the store was made from")
        self.images, self.labels, self.seed = images, labels, seed
        self.steps_per_epoch = int(attrs["steps_per_epoch"])
        self.num_classes = int(attrs["num_classes"])
        self.total = steps if steps is not None else (epochs or int(attrs["epochs"])) * self.steps_per_epoch
        self._cutmix, self._crop_scale_min = attrs["mix"] == "cutmix", float(attrs["crop_scale_min"])
        self._stream_seed = int(attrs["seed"])
        self._geometry = StreamGeometry(int(attrs["num_images"]), int(attrs["batch_size"]), int(attrs["epochs"]))

    def __len__(self) -> int:
        return self.total

    def schedule(self) -> list[int]:
        """The store row of each step: in stream order when nothing was pruned, else epochs drawn with
        replacement from the kept pool."""
        epochs = -(-self.total // self.steps_per_epoch)
        drawn = training_schedule(self.labels.num_steps, steps_per_epoch=self.steps_per_epoch, epochs=epochs,
                                  seed=self.seed, stream_steps=int(self.labels.attrs["stream_steps"]))
        return [int(row) for row in drawn.reshape(-1)[: self.total]]

    def __iter__(self) -> Iterator[StudentStep]:
        device, size = self.images.device, self.images.shape[-1]
        for index, row in enumerate(self.schedule()):
            step = self.labels.step(row)
            chosen = stored_images(step, seed=self._stream_seed, geometry=self._geometry)  # (n,)
            aug = stored_augmentation(step, n=len(chosen), seed=self._stream_seed, image_size=size,
                                      crop_scale_min=self._crop_scale_min, cutmix=self._cutmix)
            batch = apply_augmentation(self.images[chosen.to(device)], aug)
            yield StudentStep(images=batch, teacher_logits=torch.from_numpy(step.logits[: len(chosen)]).to(device),
                              index=index, epoch=index // self.steps_per_epoch, stored_step=row)

    @classmethod
    def from_export(cls, folder: str | Path, *, seed: int = 0, epochs: int | None = None,
                    device: str | torch.device = "cpu") -> ReplayedSteps:
        """The steps of a `distillery export` folder: its PNGs, normalised as its card says, and its store;
        SoftLabelStoreError when a file differs from the size and SHA-256 the card records."""
        folder = Path(folder)
        try:
            card = json.loads((folder / CARD_JSON).read_text())
            data = card["data"]
        except (OSError, json.JSONDecodeError, KeyError) as err:
            raise SoftLabelStoreError(f"{folder} is not a distillery export ({CARD_JSON}: {err}); give the folder "
                                      "`distillery export --to` wrote") from None
        if "files" not in card:
            raise SoftLabelStoreError(f"{folder}/{CARD_JSON} records no checksums (an export of an older Distillery); "
                                      "export the set again")
        present = tree_checksums(LocalFileSystem(), str(folder))
        present.pop(CARD_JSON, None), present.pop(CARD_MD, None)
        if problems := file_problems(card["files"], present, record=CARD_JSON):
            raise SoftLabelStoreError(f"{folder} is not the set its card describes: {'; '.join(problems[:3])}"
                                      f"{' ...' if len(problems) > 3 else ''}; use the folder as "
                                      "`distillery export` wrote it, or export it again")
        folders = scan_class_folders(folder / EXPORT_IMAGES, class_names=data["class_names"], ipc=None)
        pixels = decode_class_folders(folders, channels=data["channels"], image_size=data["image_size"], resize=False)
        norm = Normalization(tuple(data["mean"]), tuple(data["std"]))
        labels = SoftLabelReader(str(folder / EXPORT_LABELS), expect={"images": card["fingerprints"]["synthesize"]})
        return cls(norm.to_input(torch.from_numpy(pixels).to(device)), labels, seed=seed, epochs=epochs)
