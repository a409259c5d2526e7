"""Shared fixtures: a private PREFECT_HOME, one Prefect test server per session, small real data,
ci_tiny artifacts built once per session.

The environment is set at import time, before any test imports Prefect, so no test touches
the user's ~/.prefect or the network.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="distillery-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.pop("DISTILLERY_HOME", None)
os.environ["DISTILLERY_CACHE"] = tempfile.mkdtemp(prefix="distillery-cache-")  # file digests of data splits
# One torch thread per process. The suite runs on pytest-xdist workers (one per core), and on two
# cores two processes of two OpenMP threads each slowed each other down many times over. Every
# process of a session computes with the same thread count, so "same bytes" comparisons hold.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Iterator  # noqa: E402

import pytest  # noqa: E402
from prefect.logging.configuration import ensure_logging_setup  # noqa: E402

# Prefect binds its console log handler to the sys.stderr of the moment its logging is set up. Set
# up here, that is pytest's session-long capture stream. Set up first inside a test using capfd (a
# CLI test importing Prefect lazily), it would be that test's stream, closed when the test ends:
# every later log line a "Logging error", and the next CLI test failing on its traceback.
ensure_logging_setup()

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST.is_dir(), reason="needs the Debian package dataset-fashion-mnist (bash .ci/run installs it)"
)


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (SQLite) for every test that runs flows; its API URL, for subprocesses
    (``PREFECT_API_URL``) that should use it rather than start a server of their own."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


# Dask's nanny writes these into this process's environment when it starts workers (OMP_NUM_THREADS=1, ...).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")


@pytest.fixture(autouse=True)
def _thread_settings_outlive_no_test():
    """Put the thread variables back after each test, so child processes started later compute with the
    threads this process computes with: float results (fp16 soft labels) can differ between thread counts,
    and a test comparing a child's bytes with the session's build would fail only after a Dask test."""
    before = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory):
    """ci_tiny artifacts built once per session: ``tiny_artifacts.copy_into(root, *overrides, until=STAGE)``
    copies one config's artifact directories into a test's own root (see tests/tiny_artifacts.py)."""
    from tests.tiny_artifacts import TinyArtifacts

    return TinyArtifacts(tmp_path_factory.mktemp("tiny-artifacts"))


@pytest.fixture
def tiny_config(tmp_path: Path):
    """The ci_tiny preset with its artifact root in the test's temporary folder."""
    from flows.config import resolve_config

    return resolve_config(preset="ci_tiny", artifact_root=str(tmp_path / "artifacts"))


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """The URL of the moto S3 server this module's tests share (tests/s3_server.py)."""
    from tasks.bench.object_store import local_s3_server

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
    import fsspec

    bucket = f"distillery-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", endpoint_url=s3_endpoint, key="testing", secret="testing").mkdir(bucket)
    return f"s3://{bucket}/distillery"


def kill_when(proc: subprocess.Popen, done: Callable[[], int], *, at_least: int, timeout: float = 300) -> int:
    """SIGKILL ``proc`` (a real kill, no clean-up) once ``done()`` reaches ``at_least``; return ``done()`` after."""
    deadline = time.monotonic() + timeout
    while done() < at_least and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return done()
