"""A lease: the lock of remote (S3) roots, held across processes and machines.

The lease is one small object, ``<root>/.locks/<stage>-<fingerprint>.lease``. It is taken with a
conditional put (``If-None-Match: *``): of two runs asking at once the store lets exactly one
create it. The holder renews it every ``ttl / 4`` seconds by rewriting it conditionally on its
ETag (``If-Match``), and deletes it, again conditionally, when it is done. A waiter polls: while
the lease's ETag keeps changing its holder is alive; a lease whose ETag has not changed for
``ttl`` seconds of the waiter's own clock belongs to a dead holder (SIGKILL, lost machine), and
the waiter takes it over with a put conditional on that stale ETag, so of several waiters one
wins. No clocks are compared across machines.

    with hold_lease(fs, "bucket/root/.locks/relabel-ab12.lease", on_wait=say_waiting):
        ...  # build the artifact

A holder that loses its lease (paused longer than ``ttl``) logs it and finishes: artifact files
are the same bytes whoever writes them, so a double build costs time, never correctness.
``DISTILLERY_LEASE_SECONDS`` sets ``ttl`` (default 60).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable, Iterator

from fsspec.spec import AbstractFileSystem

LEASE_SECONDS_ENV = "DISTILLERY_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 60.0


def lease_seconds() -> float:
    return float(os.environ.get(LEASE_SECONDS_ENV, DEFAULT_LEASE_SECONDS))


class _Lease:
    """One holder's claim on the lease object: its body, the ETag it last wrote, the renewing thread."""

    def __init__(self, fs: AbstractFileSystem, path: str, ttl: float) -> None:
        self.fs, self.path, self.ttl = fs, path, ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.etag = ""
        self.beats = 0
        self._mutex, self._stop = threading.Lock(), threading.Event()
        self._renewer = threading.Thread(target=self._renew, name=f"lease {path}", daemon=True)

    def _body(self) -> bytes:
        self.beats += 1  # a new body each time, so every renewal gets a new ETag
        return json.dumps({"owner": self.owner, "ttl": self.ttl, "beat": self.beats}).encode()

    def _put(self, **condition: str) -> None:
        self.etag = self.fs.pipe_file(self.path, self._body(), **condition)["ETag"]

    def try_create(self) -> bool:
        try:
            self._put(mode="create")
        except FileExistsError:
            return False
        return True

    def try_take_over(self, stale_etag: str) -> bool:
        try:
            self._put(IfMatch=stale_etag)
        except OSError:  # another waiter won (precondition failed), or the holder released it (not found)
            return False
        return True

    def start_renewing(self) -> None:
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            with self._mutex:
                try:
                    self._put(IfMatch=self.etag)
                except OSError as err:
                    logging.getLogger("distillery").warning(
                        f"lost the lease {self.path} ({err}); finishing anyway (the bytes are the same whoever writes them)")
                    return

    def release(self) -> None:
        self._stop.set()
        if self._renewer.is_alive():
            self._renewer.join()
        with self._mutex, contextlib.suppress(OSError):  # gone or taken over: nothing of ours to delete
            bucket, key, _ = self.fs.split_path(self.path)
            self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=self.etag)


def etag_of(fs: AbstractFileSystem, path: str) -> str | None:
    try:
        return fs.info(path)["ETag"]
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def hold_lease(fs: AbstractFileSystem, path: str, *, ttl: float | None = None, poll: float | None = None,
               on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the lease at ``path`` on an S3 filesystem; ``on_wait`` is called once if another holds it."""
    lease = _Lease(fs, path, ttl or lease_seconds())
    poll = poll or min(1.0, lease.ttl / 8)
    seen, seen_since, waited = None, 0.0, False
    while not lease.try_create():
        etag = etag_of(fs, path)
        if etag is None:
            continue  # released between our put and our look: ask again
        if etag != seen:
            seen, seen_since = etag, time.monotonic()
        elif time.monotonic() - seen_since > lease.ttl and lease.try_take_over(etag):
            logging.getLogger("distillery").warning(f"lease {path} was not renewed for {lease.ttl:.0f} s; took it over")
            break
        if not waited and on_wait is not None:
            on_wait()
        waited = True
        time.sleep(poll)
    lease.start_renewing()
    try:
        yield
    finally:
        lease.release()
