"""Workers that share no disk with the driver, as on several machines: a Dask scheduler and two workers
started as separate processes (``dask scheduler`` / ``dask worker``, the commands docs/operations.md
gives), each worker in a folder of its own with its own HOME, temporary folder and data cache, and
an S3 artifact root as the only place they meet (the Fashion-MNIST files aside). The ci_tiny flow,
its units mapped onto those workers, gives the local build's bytes, and its summary reads back the
same figures as the local build's manifests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.config import with_overrides
from flows.distill import distill
from tasks.bench.object_store import stop_process
from tests.conftest import needs_fashion_mnist
from tests.file_trees import tree

pytestmark = [needs_fashion_mnist, pytest.mark.slow]


def _start(stack: ExitStack, argv: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(stop_process, process)
    return process


def _machine(tmp_path: Path, name: str, prefect_api: str) -> tuple[Path, dict[str, str]]:
    """A folder and environment of their own for one 'machine': nothing of the driver's but the code and the AWS settings."""
    home = tmp_path / name
    (home / "tmp").mkdir(parents=True)
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(home / "tmp"), "DISTILLERY_CACHE": str(home / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PREFECT_API_URL": prefect_api,
           "PREFECT_HOME": str(home / "prefect")}
    return home, env


def test_workers_with_no_shared_disk_build_through_the_bucket(prefect_server, tiny_artifacts, s3_root, tmp_path):
    tiny_artifacts.copy_into(tmp_path / "local")
    reference = tree(tmp_path / "local")
    with ExitStack() as stack:
        folder, env = _machine(tmp_path, "scheduler", prefect_server)
        scheduler_file = folder / "scheduler.json"
        scheduler = _start(stack, [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                   "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                           cwd=folder, env=env)
        deadline = time.monotonic() + 120
        while not scheduler_file.exists():
            assert scheduler.poll() is None and time.monotonic() < deadline, "the Dask scheduler did not start"
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for name in ("machine-a", "machine-b"):
            folder, env = _machine(tmp_path, name, prefect_server)
            _start(stack, [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                           "--no-dashboard", "--host", "127.0.0.1", "--local-directory", str(folder / "dask")],
                   cwd=folder, env=env)
        config = with_overrides(tiny_artifacts.config(), {"runtime.artifact_root": s3_root, "runtime.task_runner": "dask",
                                                          "runtime.dask_address": address})
        state = distill(config=config, return_state=True)
        outcomes = state.result()
    assert tree(s3_root) == reference
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    units = {r.name.split("-unit-")[0] for r in runs if "-unit-" in r.name and r.state.is_completed()}
    assert units == {"synthesize", "relabel", "evaluate"}, "the units did not run on the workers"
    local = {o.ref: json.loads((tmp_path / "local" / o.ref.stage / o.ref.fingerprint / "manifest.json").read_text())
             for o in outcomes}
    assert [o.metrics for o in outcomes] == [local[o.ref]["metrics"] for o in outcomes]
    assert not list((tmp_path / "machine-a").glob("**/*.zarr")) and not list((tmp_path / "machine-b").glob("**/*.zarr"))
