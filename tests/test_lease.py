"""The lease of S3 roots (storage/lease.py) on a real S3 endpoint: a living holder keeps it well past
its expiry by renewing it, a SIGKILLed holder's lease is taken over once it stops being renewed, and
a released lease leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from storage.artifacts import ArtifactRef, ArtifactStore
from storage.lease import LEASE_SECONDS_ENV
from storage.locks import artifact_lock

pytestmark = pytest.mark.slow
REF = ArtifactRef(stage="relabel", fingerprint="e" * 32)
HOLD = """
import sys, time
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.locks import artifact_lock
with artifact_lock(ArtifactStore(sys.argv[1]), ArtifactRef(stage="relabel", fingerprint="e" * 32)):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", time.time(), flush=True)
"""


def _holder(root: str, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, root, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_living_holder_keeps_its_lease_past_expiry_and_the_waiter_follows_it(s3_root, monkeypatch):
    monkeypatch.setenv(LEASE_SECONDS_ENV, "1")
    holder = _holder(s3_root, 4)  # four lease lengths: only renewals keep it
    waited = []
    try:
        with artifact_lock(ArtifactStore(s3_root), REF, on_wait=lambda: waited.append(True)):
            taken_at = time.time()
        released_at = float(holder.communicate(timeout=60)[0].split()[-1])
    finally:
        holder.kill()
        holder.wait()
    assert waited == [True], "took the lease without waiting for its holder"
    assert taken_at >= released_at, "took the lease while its holder still held it"
    store = ArtifactStore(s3_root)
    assert not store.fs.exists(f"{store.root_path}/.locks/relabel-{'e' * 32}.lease"), "the released lease is still there"


def test_a_killed_holder_does_not_block_past_expiry(s3_root, monkeypatch):
    monkeypatch.setenv(LEASE_SECONDS_ENV, "2")
    holder = _holder(s3_root, 600)
    holder.kill()
    holder.wait()
    waited, taken = [], threading.Event()

    def take() -> None:
        with artifact_lock(ArtifactStore(s3_root), REF, on_wait=lambda: waited.append(True)):
            taken.set()

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    assert taken.wait(60), "the lease of a killed holder was never taken over"
    taker.join(30)  # its release reaches the server before the module's server stops
    assert not taker.is_alive(), "the taker never released the lease"
    assert waited == [True], "the killed holder's lease was not there to wait for"
