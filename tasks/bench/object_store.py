"""The object-store overhead: one pipeline cold on an S3 endpoint against cold on a local folder.

The endpoint is moto's standalone S3 server (``moto[server]``, in the test extra) on a free port of
127.0.0.1, the same server the tests start: it measures what the S3 code path costs (requests,
no listings cache, the lease), not a network. Runs are interleaved local, S3, S3, local, so drift
of the machine's speed cancels in the sums.

    with local_s3_server() as endpoint, aws_settings(endpoint):
        ...  # s3:// roots now reach the server
    s3_seconds, local_seconds = s3_vs_local_seconds(lambda root: run_plain(config_at(root)), tmp)
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
from typing import Callable, Iterator

from storage.locations import open_root
from tasks.bench.side_by_side import timed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def local_s3_server(**env: str) -> Iterator[str]:
    """A moto S3 server on a free port of 127.0.0.1 (``env`` added to its environment), its URL while
    it runs; stopped afterwards, its port closed."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not answers(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the moto S3 server did not start; install it with: pip install 'moto[server]'")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(server)
    if answers(port):
        raise RuntimeError(f"port {port} still open after the moto server stopped")


def stop_process(process: subprocess.Popen, *, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns once the process is gone."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def aws_settings(endpoint: str) -> Iterator[None]:
    """The standard AWS variables pointing at ``endpoint`` (with a dummy key) while inside; restored after."""
    wanted = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
              "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def s3_vs_local_seconds(run: Callable[[str], object], local_folder: Path) -> tuple[float, float]:
    """Seconds of ``run(root)`` cold on two fresh S3 roots and on two fresh local roots, interleaved
    local, S3, S3, local: (S3 sum, local sum)."""
    with local_s3_server() as endpoint, aws_settings(endpoint):
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        open_root(f"s3://{bucket}").fs.mkdir(bucket)
        local_a, _ = timed(lambda: run(str(local_folder / "a")))
        s3_a, _ = timed(lambda: run(f"s3://{bucket}/a"))
        s3_b, _ = timed(lambda: run(f"s3://{bucket}/b"))
        local_b, _ = timed(lambda: run(str(local_folder / "b")))
    return s3_a + s3_b, local_a + local_b
