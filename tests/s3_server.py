"""A real S3 endpoint for tests: moto's standalone server on 127.0.0.1, on a free port, started and
stopped by the tests (no port left open; :func:`tasks.bench.object_store.local_s3_server`), and a
fresh bucket per test with the AWS variables set the way a user sets them (``AWS_ENDPOINT_URL`` and
a key), so child processes see the same store.

    def test_x(s3_root):            # "s3://<fresh bucket>/distillery"
        run(["--artifact-root", s3_root])
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import fsspec
import pytest

from storage.artifacts import ArtifactRef
from storage.locations import open_root
from tasks.bench.object_store import local_s3_server


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """The URL of the moto S3 server this module's tests share."""
    with local_s3_server() as url:
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
