"""Artifact identity and the artifact tree.

An artifact is one stage output: a directory ``<root>/<stage>/<fingerprint>/`` holding the
stage's files and, written last and atomically, ``manifest.json``. The fingerprint hashes the
stage name, the stage's code version, its canonical config and the fingerprints of its inputs,
so the same request always names the same directory, on any machine.

    store = ArtifactStore("artifacts")           # or "s3://bucket/distillery", "memory://x"
    ref = request.ref()                          # ArtifactRef(stage=..., fingerprint=...)
    store.write_bytes(ref, "model.pt", blob)
    store.write_manifest(ref, request, metrics={...}, seconds=12.3)
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Any, ClassVar

from fsspec.spec import AbstractFileSystem
from pydantic import BaseModel, ConfigDict

from storage.locations import open_root

MANIFEST = "manifest.json"


class ArtifactError(RuntimeError):
    """An artifact is missing, incomplete or damaged; the message names it and the fix."""


def rebuild_advice(path: str) -> str:
    """The one fix for a damaged or incomplete artifact, worded the same everywhere."""
    return f"delete {path} and rerun the same command to rebuild it"


class ArtifactRef(BaseModel):
    """What travels through Prefect instead of tensors: a stage name and a fingerprint."""

    model_config = ConfigDict(frozen=True)
    stage: str
    fingerprint: str

    def __str__(self) -> str:
        return f"{self.stage}/{self.fingerprint}"


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no whitespace, floats as Python repr."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


class StageRequest(BaseModel):
    """Everything that determines a stage's output: its config sections, seed and inputs.

    Subclasses set ``stage`` and ``code_version`` (bump it when the stage's computation
    changes) and add their config sections as fields.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    stage: ClassVar[str]
    code_version: ClassVar[int]

    seed: int
    inputs: dict[str, ArtifactRef] = {}

    def fingerprint(self) -> str:
        identity = {
            "stage": self.stage,
            "code_version": self.code_version,
            "request": self.model_dump(mode="json"),
        }
        return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:32]

    def ref(self) -> ArtifactRef:
        return ArtifactRef(stage=self.stage, fingerprint=self.fingerprint())


def tree_checksums(fs: AbstractFileSystem, base: str) -> dict[str, dict[str, Any]]:
    """``{path relative to base: {"bytes", "sha256"}}`` of every file under ``base``, sorted."""
    if not fs.exists(base):
        return {}
    prefix, listing = fs.info(base)["name"].rstrip("/") + "/", {}  # as find spells it (a relative path made absolute)
    for path in sorted(fs.find(base)):
        data = fs.cat_file(path)  # one GET on an object store (open() asks for the size first)
        listing[path.removeprefix(prefix)] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return listing


class ArtifactStore:
    """The artifact tree under one root URI (a local path or any fsspec URL)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = str(root)
        location = open_root(self.root)
        self.fs, self.root_path, self.is_local = location.fs, location.path, location.is_local

    def path(self, ref: ArtifactRef, name: str = "") -> str:
        parts = [self.root_path, ref.stage, ref.fingerprint] + ([name] if name else [])
        return "/".join(parts)

    def location(self, ref: ArtifactRef) -> str:
        """The artifact's folder as a user names it: a local path, or a URL with its scheme."""
        return self.url(ref, "")

    def url(self, ref: ArtifactRef, name: str) -> str:
        """A location Zarr and fsspec open: a plain path for local roots, else a full URL."""
        path = self.path(ref, name)
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def exists(self, ref: ArtifactRef, name: str) -> bool:
        return self.fs.exists(self.path(ref, name))

    def write_bytes(self, ref: ArtifactRef, name: str, data: bytes) -> None:
        """Write a file whole: to a temporary name first, then renamed into place. On object
        storage one PUT is already whole or absent, so the object is written in place."""
        final = self.path(ref, name)
        if not self.is_local:
            self.fs.pipe_file(final, data)
            return
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        partial = f"{final}.partial-{uuid.uuid4().hex[:8]}"
        with self.fs.open(partial, "wb") as handle:
            handle.write(data)
        self.fs.mv(partial, final)

    def read_bytes(self, ref: ArtifactRef, name: str) -> bytes:
        try:
            with self.fs.open(self.path(ref, name), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise ArtifactError(
                f"{name} is missing from artifact {ref} under {self.root}; {rebuild_advice(self.location(ref))}"
            ) from None

    def is_complete(self, ref: ArtifactRef) -> bool:
        return self.exists(ref, MANIFEST)

    def write_manifest(
        self,
        ref: ArtifactRef,
        request: StageRequest,
        *,
        metrics: dict[str, float],
        seconds: float,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Mark the artifact complete. Call last: a manifest means every other file is whole.

        Leftovers of writes killed mid-way are removed first: ours (``*.partial-*``) and zarr's, which
        writes a chunk to ``<name>.<uuid hex>.partial`` and renames it.
        """
        for pattern in ("*.partial-*", "*.partial"):
            for leftover in self.fs.glob(f"{self.path(ref)}/**/{pattern}"):
                self.fs.rm(leftover)
        files = self.file_checksums(ref)  # one pass over the files gives the sizes and the checksums
        manifest = {
            "stage": ref.stage,
            "fingerprint": ref.fingerprint,
            "code_version": request.code_version,
            "config": request.model_dump(mode="json", exclude={"inputs"}),
            "inputs": {name: str(inp) for name, inp in request.inputs.items()},
            "metrics": metrics,
            "bytes": sum(f["bytes"] for f in files.values()),
            "files": files,
            "seconds": round(seconds, 3),
            **(extra or {}),
        }
        self.write_bytes(ref, MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
        return manifest

    def read_manifest(self, ref: ArtifactRef) -> dict[str, Any]:
        raw = self.read_bytes(ref, MANIFEST)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as err:
            raise ArtifactError(
                f"manifest of {ref} under {self.root} is not valid JSON ({err}); {rebuild_advice(self.location(ref))}"
            ) from None

    def file_checksums(self, ref: ArtifactRef) -> dict[str, dict[str, Any]]:
        """``{relative path: {"bytes", "sha256"}}`` of every file of the artifact but its manifest."""
        listing = tree_checksums(self.fs, self.path(ref))
        listing.pop(MANIFEST, None)
        return listing

    def delete(self, ref: ArtifactRef) -> None:
        """Remove the artifact's directory (absent: nothing to do); the manifest goes first, so a
        delete cut short leaves an unfinished artifact, never a complete-looking partial one."""
        if self.is_complete(ref):
            self.fs.rm(self.path(ref, MANIFEST))
        if self.fs.exists(self.path(ref)):
            self.fs.rm(self.path(ref), recursive=True)

    def size_bytes(self, ref: ArtifactRef) -> int:
        """Bytes on disk of the artifact's files, manifest excluded."""
        sizes = self.fs.du(self.path(ref), total=False, withdirs=False)
        return int(sum(size for path, size in sizes.items() if not path.endswith(MANIFEST)))
