"""The artifact lock: a second builder waits for the first, and a dead holder frees the lock."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from storage.artifacts import ArtifactRef, ArtifactStore
from storage.locks import artifact_lock

HOLD = """
import sys, time
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.locks import artifact_lock
with artifact_lock(ArtifactStore(sys.argv[1]), ArtifactRef(stage="teacher", fingerprint="f" * 32)):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(root, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_builder_waits_until_the_first_releases(tmp_path):
    holder = _holder(tmp_path, 1.5)
    waited, started = [], time.monotonic()
    with artifact_lock(ArtifactStore(str(tmp_path)), ArtifactRef(stage="teacher", fingerprint="f" * 32),
                       on_wait=lambda: waited.append(time.monotonic())):
        held_for = time.monotonic() - started
    assert held_for > 1.0, "took the lock while another process held it"
    assert len(waited) == 1 and waited[0] - started < 1.0
    holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = _holder(tmp_path, 60)
    holder.kill()
    holder.wait()
    done = threading.Event()

    def take() -> None:
        with artifact_lock(ArtifactStore(str(tmp_path)), ArtifactRef(stage="teacher", fingerprint="f" * 32)):
            done.set()

    threading.Thread(target=take, daemon=True).start()
    assert done.wait(10), "the lock of a killed process was never released"
