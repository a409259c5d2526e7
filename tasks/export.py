"""Taking a distilled set away: the folder `distillery export --to DIR` writes, in plain formats.

    DIR/images/<class>/<index>.png   the images, one folder per class, named by store index
                                     (the class-folder format of :mod:`tasks.data.class_folders`)
    DIR/labels.zarr/                 the soft-label store the students read (the pruned one when
                                     pruning is on), copied byte for byte
    DIR/card.json, DIR/card.md       the config, fingerprints, metrics, normalisation and the command;
                                     card.json's ``files``: size and SHA-256 of every PNG and store file

Nothing is computed here: the pipeline's artifacts are read and copied. The image and label
artifacts are re-read against their manifests' checksums first, and the copied store against
them after, so a damaged artifact is refused (ArtifactError naming the file and the fix) and
never leaves; :meth:`ReplayedSteps.from_export` checks the card's checksums. The folder is built
under a temporary name beside DIR and renamed into place last, so a failed export leaves no
half folder, and an existing DIR is refused, never overwritten. Train your own student on it
with :meth:`tasks.labels.replay.ReplayedSteps.from_export`; import the images back with
``synthesis.mode=imported synthesis.import_root=DIR/images``.

    distillery export --preset ci_tiny --to distilled
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from storage.artifacts import ArtifactRef, ArtifactStore, tree_checksums
from storage.file_names import CARD_JSON, CARD_MD, EXPORT_IMAGES, EXPORT_LABELS, IMAGES, LABELS
from storage.image_store import read_image_store
from storage.verify import file_problems, verify_artifact
from tasks.data import DataConfig
from tasks.data.class_folders import class_folder, write_class_folders

CARD_FORMAT_VERSION = 2  # 2: ``files``, the size and SHA-256 of every PNG and store file


class ExportError(RuntimeError):
    """An export that cannot be written; the message names the problem and the fix."""


def check_export_target(dest: Path) -> None:
    """Refuse a target that exists: an export never overwrites or merges."""
    if dest.exists() or dest.is_symlink():
        raise ExportError(f"export target {dest} already exists; give a new folder to --to (an export never "
                          "overwrites), or remove the old one first")


def build_card(*, store: ArtifactStore, refs: dict[str, ArtifactRef], config: dict[str, Any], command: str,
               num_images: int, ipc: int) -> dict[str, Any]:
    """The card: what the set is, how it was made and how good it is (metrics per stage)."""
    from tasks.data import load_split, normalization  # torch: here, so that the CLI's export checks load without it

    manifests = {stage: store.read_manifest(ref) for stage, ref in refs.items()}
    data = DataConfig.model_validate(manifests["evaluate"]["config"]["data"])  # as the students saw it (resolved mean/std)
    train, norm = load_split(data, "train"), normalization(data)
    labels = manifests["prune" if "prune" in refs else "relabel"]
    return {
        "format": "distillery-export", "format_version": CARD_FORMAT_VERSION, "command": command,
        "data": {"name": data.name, "class_names": list(train.class_names),
                 "class_folders": [class_folder(name) for name in train.class_names],
                 "channels": train.channels, "image_size": train.image_size, "mean": list(norm.mean), "std": list(norm.std)},
        "images": {"folder": EXPORT_IMAGES, "count": num_images, "ipc": ipc, "mode": config["synthesis"]["mode"]},
        "labels": {"store": EXPORT_LABELS, "steps": int(labels["metrics"]["steps"]),
                   "stream_steps": int(labels["stream_steps"]), "bytes": int(labels["metrics"]["store_bytes"])},
        "fingerprints": {stage: ref.fingerprint for stage, ref in refs.items()},
        "metrics": {stage: manifest["metrics"] for stage, manifest in manifests.items()},
        "config": config,
    }


def card_markdown(card: dict[str, Any]) -> str:
    """A short human-readable card: what is in the folder, the headline numbers, how to use it."""
    evaluate, data, images, labels = card["metrics"]["evaluate"], card["data"], card["images"], card["labels"]
    return "\n".join([
        f"# Distilled {data['name']}: {images['mode']}, {images['ipc']} images per class", "",
        f"Made by `{card['command']}`.", "",
        "| what | value |", "|---|---|",
        f"| images | {images['count']} PNGs ({data['channels']} x {data['image_size']} x {data['image_size']}) "
        f"in `{images['folder']}/<class>/` |",
        f"| soft labels | `{labels['store']}`: {labels['steps']} of {labels['stream_steps']} steps, "
        f"{labels['bytes']:,} bytes |",
        f"| student test top-1 | {evaluate['test_top1']:.4f} ± {evaluate['test_top1_std']:.4f} |",
        f"| teacher test top-1 | {evaluate['teacher_test_top1']:.4f} |",
        f"| normalisation | mean {data['mean']}, std {data['std']} |", "",
        "Train a student on it: `from tasks.labels import ReplayedSteps`, then "
        "`ReplayedSteps.from_export(\"<this folder>\")` (tasks/labels/replay.py). "
        "Config, fingerprints and every metric are in card.json.", "",
    ])


def copied_checksums(folder: Path, *, recorded: dict[str, dict[str, Any]], ref: ArtifactRef) -> dict[str, dict[str, Any]]:
    """The checksum of every file written under ``folder`` (the card's ``files``), after checking that
    each copied store file equals the one the manifest of ``ref`` records (ExportError naming it if not)."""
    written = tree_checksums(LocalFileSystem(), str(folder))
    copied = {name.removeprefix(f"{EXPORT_LABELS}/"): entry for name, entry in written.items()
              if name.startswith(f"{EXPORT_LABELS}/")}
    manifest_store = {name.removeprefix(f"{LABELS}/"): entry for name, entry in recorded.items()
                      if name.startswith(f"{LABELS}/")}
    if problems := file_problems(manifest_store, copied, record=f"the manifest of {ref}"):
        raise ExportError(f"the copy of the soft-label store differs from artifact {ref}: {'; '.join(problems)}; "
                          "export again (the disk or another process changed it while it was copied)")
    return written


def write_export(*, store: ArtifactStore, refs: dict[str, ArtifactRef], config: dict[str, Any], command: str,
                 dest: Path) -> Path:
    """Write the export folder at ``dest`` from the run's artifacts; ``refs`` by stage (the last label store
    under "prune" or "relabel", the students under "evaluate")."""
    check_export_target(dest)
    labels_ref = refs.get("prune") or refs["relabel"]
    for ref in (refs["synthesize"], labels_ref):  # the artifacts copied from, whole, before anything is written
        verify_artifact(store, ref)
    images, classes, attrs = read_image_store(store.url(refs["synthesize"], IMAGES))
    card = build_card(store=store, refs=refs, config=config, command=command, num_images=len(images),
                      ipc=int(attrs["ipc"]))
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        write_class_folders(images, classes, class_names=card["data"]["class_names"], dest=partial / EXPORT_IMAGES)
        store.fs.get(store.path(labels_ref, LABELS), str(partial / EXPORT_LABELS), recursive=True)
        card["files"] = copied_checksums(partial, recorded=store.read_manifest(labels_ref)["files"], ref=labels_ref)
        (partial / CARD_JSON).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        (partial / CARD_MD).write_text(card_markdown(card))
        check_export_target(dest)  # another export may have taken the name meanwhile
        partial.rename(dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return dest
