"""Copying built artifacts into a bucket, for tests on a real S3 endpoint. The endpoint and the
buckets are fixtures in tests/conftest.py: ``s3_endpoint`` (moto's standalone server on 127.0.0.1, on
a free port, started and stopped by the tests: :func:`tasks.bench.object_store.local_s3_server`) and
``s3_root`` (a fresh bucket per test, the AWS variables set the way a user sets them, so child
processes see the same store).

    def test_x(s3_root):            # "s3://<fresh bucket>/distillery"
        run(["--artifact-root", s3_root])
"""

from __future__ import annotations

from pathlib import Path

from storage.artifacts import ArtifactRef
from storage.locations import open_root


def upload(refs: list[ArtifactRef], source: Path, root: str) -> None:
    """Copy the artifact directories ``refs`` from the local root ``source`` to the remote ``root``."""
    location = open_root(root)
    fs, base = location.fs, location.path
    for ref in refs:
        fs.put(str(source / ref.stage / ref.fingerprint), f"{base}/{ref.stage}/{ref.fingerprint}", recursive=True)
