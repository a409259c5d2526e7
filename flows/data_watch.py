"""Data that changes under a run: each split's identity is taken again when the stages are done,
and a run whose data changed meanwhile keeps nothing it built from it.

A stage's artifact is named by the identity its data had when the run started; built from files
that changed during the run (images added to a folder, a file replaced), it would carry that
name for content it does not hold. So the artifacts this run built that read a changed split
(themselves or through their inputs) are removed, and the run fails saying which split changed
and what to do; artifacts it only reused stay as they are.

    watch = DataWatch(identity)
    watch.note(request, built=True)          # for each stage, as the flow calls it
    watch.check(config, until, store)        # DataChangedError when a split changed
"""

from __future__ import annotations

from flows.config import DistilleryConfig
from flows.pipeline import data_identity
from storage.artifacts import ArtifactRef, ArtifactStore, StageRequest
from tasks.data.identity import SplitIdentity


class DataChangedError(RuntimeError):
    """A data split changed while the run read it; the message names the split and the fix."""


class DataWatch:
    """Which splits each artifact of a run depends on, and which the run built (rather than reused)."""

    def __init__(self, identity: dict[str, SplitIdentity]) -> None:
        self.identity = identity
        self.splits: dict[ArtifactRef, set[str]] = {}
        self.built: list[ArtifactRef] = []

    def note(self, request: StageRequest, *, built: bool) -> None:
        read = set(getattr(request, "data_identity", {}))
        for ref in request.inputs.values():
            read |= self.splits.get(ref, set())
        self.splits[request.ref()] = read
        if built:
            self.built.append(request.ref())

    def check(self, config: DistilleryConfig, until: str, store: ArtifactStore) -> None:
        """Take the identity again; when a split changed, remove what this run built from it and raise."""
        now = data_identity(config, until)
        changed = [split for split, ident in self.identity.items() if now[split] != ident]
        if not changed:
            return
        spoiled = [ref for ref in self.built if self.splits[ref] & set(changed)]
        for ref in spoiled:
            store.delete(ref)
        described = "; ".join(f"{split}: {self.identity[split].images:,} images, digest {self.identity[split].short()} "
                              f"-> {now[split].images:,} images, digest {now[split].short()}" for split in changed)
        raise DataChangedError(
            f"the data at {config.data.root or config.data.name} changed while this run read it ({described}); the "
            f"{len(spoiled)} artifacts it built from it were removed, those it reused are kept. Run again once the "
            "files are settled to build from them as they are then")
