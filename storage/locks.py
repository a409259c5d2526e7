"""One builder per artifact: an exclusive lock held while a stage computes it.

Two runs of the same config (two terminals, a schedule overlapping a manual run) reach the
same fingerprints. The first takes ``<root>/.locks/<stage>-<fingerprint>.lock`` and builds; the
second blocks on the lock, then finds the manifest and reuses the artifact. Locks are
``filelock`` locks (flock on POSIX, msvcrt on Windows), released by the operating system when
a process dies, so a killed run never leaves a stale lock. S3 roots hold a lease object
instead (:mod:`storage.lease`: conditional put, heartbeat, expiry), which holds across
machines; a killed holder's lease expires. Other remote roots (memory://) have no lock.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from storage.artifacts import ArtifactRef, ArtifactStore
from storage.lease import hold_lease


@contextlib.contextmanager
def artifact_lock(store: ArtifactStore, ref: ArtifactRef, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the artifact's lock; ``on_wait`` is called once if another process holds it."""
    if not store.is_local:
        if "s3" not in store.fs.protocol:
            yield
            return
        with hold_lease(store.fs, f"{store.root_path}/.locks/{ref.stage}-{ref.fingerprint}.lease", on_wait=on_wait):
            yield
        return
    folder = f"{store.root_path}/.locks"  # beside the stage folders, so these hold artifacts only
    os.makedirs(folder, exist_ok=True)
    # thread_local=False: one lock object per call, and Prefect may release it from another thread.
    lock = FileLock(f"{folder}/{ref.stage}-{ref.fingerprint}.lock", thread_local=False, is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait()
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
