"""ci_tiny artifacts built once per pytest session and copied into each test's own root.

Stage outputs are directories named by their fingerprint, so one session root can hold the
artifacts of many configs side by side without collisions, and the same fingerprint is the same
bytes wherever it was built. A test asks for a config (ci_tiny plus overrides, up to a stage),
gets a copy of exactly that config's artifact directories in a root of its own, and may change
them there. Builds call the stage entries without Prefect (:func:`flows.without_prefect.run_plain`),
the same entries the flows call.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from flows.config import DistilleryConfig, resolve_config
from storage.artifacts import ArtifactRef
from tasks.data.identity import SplitIdentity, split_identity


def identity(config: DistilleryConfig, *splits: str) -> dict[str, SplitIdentity]:
    """``data_identity`` for a hand-built request: the identity of each split it reads (default: train)."""
    return {split: split_identity(config.data, split) for split in splits or ("train",)}


class TinyArtifacts:
    """The session's shared, read-only artifact root and the copies handed out from it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[tuple[tuple[str, ...], str], list[ArtifactRef]] = {}

    def config(self, *overrides: str, artifact_root: Path | str | None = None) -> DistilleryConfig:
        """The ci_tiny preset with ``overrides``, rooted at ``artifact_root`` (default: the shared root)."""
        return resolve_config(preset="ci_tiny", overrides=list(overrides), artifact_root=str(artifact_root or self.root))

    def build(self, *overrides: str, until: str = "evaluate") -> list[ArtifactRef]:
        """The references of every stage ``run_plain`` calls for this config, built in the shared root once."""
        key = (overrides, until)
        if key not in self._built:
            from flows.without_prefect import run_plain

            self._built[key] = [outcome.ref for outcome in run_plain(self.config(*overrides), until)]
        return self._built[key]

    def copy_into(self, root: Path | str, *overrides: str, until: str = "evaluate") -> list[ArtifactRef]:
        """Copy this config's artifact directories (and nothing else) into ``root``; their references."""
        refs = self.build(*overrides, until=until)
        for ref in refs:
            target = Path(root, ref.stage, ref.fingerprint)
            if not target.exists():
                shutil.copytree(self.root / ref.stage / ref.fingerprint, target)
        return refs
