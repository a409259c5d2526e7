"""A real S3 endpoint for tests: moto's standalone server on 127.0.0.1, on a free port, started and
stopped by the tests (no port left open), and a fresh bucket per test with the AWS variables set
the way a user sets them (``AWS_ENDPOINT_URL`` and a key), so child processes see the same store.

    def test_x(s3_root):            # "s3://<fresh bucket>/distillery"
        run(["--artifact-root", s3_root])
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import fsspec
import pytest

from storage.artifacts import ArtifactRef
from storage.locations import open_root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def moto_server(**env: str) -> Iterator[str]:
    """A moto S3 server on a free port of 127.0.0.1 (``env`` added to its environment), its URL while
    it runs; stopped afterwards, its port closed."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            assert server.poll() is None and time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert not _answers(port), f"port {port} still open after the moto server stopped"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """The URL of the moto S3 server this module's tests share."""
    with moto_server() as url:
        yield url


@pytest.fixture
def s3_root(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://<new bucket>/distillery`` on the module's server, the AWS variables pointing there."""
    for name, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    bucket = f"distillery-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", endpoint_url=s3_endpoint, key="testing", secret="testing").mkdir(bucket)
    return f"s3://{bucket}/distillery"


def upload(refs: list[ArtifactRef], source: Path, root: str) -> None:
    """Copy the artifact directories ``refs`` from the local root ``source`` to the remote ``root``."""
    location = open_root(root)
    fs, base = location.fs, location.path
    for ref in refs:
        fs.put(str(source / ref.stage / ref.fingerprint), f"{base}/{ref.stage}/{ref.fingerprint}", recursive=True)
