"""An S3 artifact root, end to end, on a real S3 endpoint (moto's server on 127.0.0.1, tests/s3_server.py).

The ci_tiny pipeline run through the CLI onto ``s3://`` gives the same files, byte for byte, as the
session's local build; a rerun from another folder with an empty data cache builds nothing and reads
the artifacts back from the bucket; ``verify`` finds a chunk damaged in the bucket. A run killed
half-way through relabel resumes from what the bucket holds to the clean bytes; two runs of one
config at once on one bucket build each stage once (the lease of :mod:`storage.lease`). A bucket
that is missing, an endpoint that does not answer and a key the server refuses each stop the run
before any work with one message naming the root and the fix, exit 2.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest

from flows.cli import main
from storage.locations import open_root
from tasks.bench.object_store import free_port, local_s3_server
from tests.conftest import needs_fashion_mnist
from tests.file_trees import tree
from tests.s3_server import upload
from tests.test_fault_injection import OVERRIDES, kill_in, pipeline, run_twice_at_once

pytestmark = [needs_fashion_mnist, pytest.mark.slow]
TINY = ["--preset", "ci_tiny"]


def _local_reference(tiny_artifacts, tmp_path, *overrides: str, until: str = "evaluate") -> dict[str, bytes]:
    tiny_artifacts.copy_into(tmp_path / "local", *overrides, until=until)
    return tree(tmp_path / "local")


def test_a_run_on_s3_gives_the_local_bytes_and_a_rerun_reads_only_from_the_bucket(
        prefect_server, tiny_artifacts, s3_root, tmp_path, capfd):
    reference = _local_reference(tiny_artifacts, tmp_path)
    assert main(["run", *TINY, "--artifact-root", s3_root]) == 0
    assert tree(s3_root) == reference

    elsewhere = tmp_path / "another-machine"
    elsewhere.mkdir()
    env = {**os.environ, "DISTILLERY_CACHE": str(elsewhere / "cache")}
    rerun = subprocess.run([sys.executable, "-m", "flows.without_prefect", *TINY, "--artifact-root", s3_root],
                           cwd=elsewhere, env={**env, "PYTHONPATH": os.getcwd()}, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert " building " not in rerun.stdout + rerun.stderr
    assert len(rerun.stdout.splitlines()) == 5  # five artifacts reported, read back from the bucket
    assert tree(s3_root) == reference

    capfd.readouterr()
    assert main(["verify", "--artifact-root", s3_root]) == 0
    location = open_root(s3_root)
    fs, base = location.fs, location.path
    chunk = next(p for p in sorted(fs.find(f"{base}/relabel")) if "/logits/c/" in p)
    data = bytearray(fs.cat_file(chunk))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(chunk, bytes(data))
    code, out = main(["verify", "--artifact-root", s3_root]), capfd.readouterr().out
    assert code == 1 and "damaged    relabel/" in out and "fails its checksum" in out


def test_a_kill_mid_relabel_on_s3_resumes_to_the_clean_bytes(tiny_artifacts, s3_root, tmp_path):
    reference = _local_reference(tiny_artifacts, tmp_path, *OVERRIDES)
    refs = tiny_artifacts.build(*OVERRIDES, until="synthesize")
    upload(refs, tiny_artifacts.root, s3_root)
    kill_in(s3_root, "relabel")
    location = open_root(s3_root)
    fs, base = location.fs, location.path
    assert not fs.glob(f"{base}/relabel/*/manifest.json")
    assert fs.glob(f"{base}/relabel/*/labels.zarr/complete/c/*"), "the killed run stored no relabel chunk"
    finished = subprocess.run(pipeline(s3_root), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert tree(s3_root) == reference


def test_two_runs_at_once_on_one_bucket_build_each_stage_once_and_agree(tiny_artifacts, s3_root, tmp_path):
    reference = _local_reference(tiny_artifacts, tmp_path, *OVERRIDES)
    run_twice_at_once(s3_root)
    assert tree(s3_root) == reference
    location = open_root(s3_root)
    fs, base = location.fs, location.path
    assert not fs.find(f"{base}/.locks"), "a lease was left behind"


@pytest.mark.parametrize("fault", ["missing bucket", "unreachable endpoint", "refused key"])
def test_a_bad_s3_root_is_refused_before_any_work_naming_root_and_fix(
        fault, tiny_artifacts, s3_root, capfd, monkeypatch):
    refs = tiny_artifacts.build(until="teacher")
    upload(refs, tiny_artifacts.root, s3_root)
    before = tree(s3_root)
    root, endpoint = s3_root, os.environ["AWS_ENDPOINT_URL"]
    if fault == "missing bucket":
        root, expected = "s3://no-such-bucket-here/distillery", "the bucket does not exist"
    elif fault == "unreachable endpoint":
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
        expected = "the endpoint does not answer"
    else:
        expected = "the credentials were refused"
    with contextlib.ExitStack() as servers:
        if fault == "refused key":  # a server that checks signatures and knows no key
            monkeypatch.setenv("AWS_ENDPOINT_URL", servers.enter_context(local_s3_server(INITIAL_NO_AUTH_ACTION_COUNT="0")))
        code = main(["run", *TINY, "--artifact-root", root])
    out, err = capfd.readouterr()
    assert code == 2 and "Traceback" not in out + err, err[-3000:]
    assert f"artifact root {root} cannot be used" in err and expected in err, err
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    assert tree(s3_root) == before
