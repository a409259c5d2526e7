"""Scale-out: a real 2-worker local Dask cluster and a non-local fsspec artifact root, each
giving the same artifacts as the sequential run on a local folder, byte for byte.

The ci_tiny pipeline runs once sequentially on a local root (the reference: the session's build,
the stage entries called one after another), once through the flow with
``runtime.task_runner=dask`` and once through the flow on ``memory://``; every file of every artifact must be
identical (manifests aside from their timings). The Dask unit task runs must be recorded by
this run's Prefect API, not by temporary servers of the workers.
"""

from __future__ import annotations


import fsspec
import pytest
import torch

from flows.config import with_overrides
from flows.distill import distill
from tests.conftest import needs_fashion_mnist
from tests.file_trees import tree

pytestmark = needs_fashion_mnist


@pytest.fixture(scope="module")
def sequential(tiny_artifacts, tmp_path_factory):
    """The reference: the ci_tiny pipeline, sequential (the session's, built by the stage entries one after
    another), on a local folder."""
    root = tmp_path_factory.mktemp("sequential")
    tiny_artifacts.copy_into(root)
    config = tiny_artifacts.config(artifact_root=root)
    files = tree(config.runtime.artifact_root)
    assert any("/units/" in name for name in files) and any("labels.zarr" in name for name in files)
    return config, files


@pytest.mark.slow
def test_dask_run_is_byte_identical_to_sequential(prefect_server, sequential, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    reference, files = sequential
    scaled = with_overrides(reference, {"runtime.artifact_root": str(tmp_path / "dask"),
                                        "runtime.task_runner": "dask", "runtime.dask_workers": "2"})
    state = distill(config=scaled, return_state=True)
    assert state.is_completed()
    assert tree(str(tmp_path / "dask")) == files

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    units = sorted(r.name for r in runs if "-unit-" in r.name)
    assert len([u for u in units if u.startswith("synthesize-unit-")]) == 10
    assert {u.split("-unit-")[0] for u in units} == {"synthesize", "relabel", "evaluate"}
    assert all(r.state.is_completed() for r in runs)
    # runtime.device is auto here: the gpu tag follows whether this machine has CUDA
    assert {"gpu" in r.tags for r in runs} == {torch.cuda.is_available()}


@pytest.mark.slow
def test_replicates_train_their_students_together_on_dask_and_match_sequential_runs(prefect_server, tiny_artifacts,
                                                                                  tmp_path):
    """Two replicates, a shared teacher: every replicate is built up to its students, then all the
    students are mapped at once; the artifacts are those of the two runs made one after another."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    one = ["evaluate.seeds=1"]
    for r in range(2):
        tiny_artifacts.copy_into(tmp_path / "sequential", *one, f"runtime.seed={r}", "teacher.seed=0")
    config = tiny_artifacts.config(*one, artifact_root=tmp_path / "dask")
    scaled = with_overrides(config, {"runtime.task_runner": "dask", "runtime.dask_workers": "2"})
    state = distill(config=scaled, replicates=2, share_teacher=True, return_state=True)
    assert state.is_completed()
    outcomes = state.result()
    assert sorted({(o.replicate, o.ref.stage) for o in outcomes if o.ref.stage in ("teacher", "evaluate")}) == [
        (0, "evaluate"), (0, "teacher"), (1, "evaluate"), (1, "teacher")]
    assert len({o.ref for o in outcomes if o.ref.stage == "teacher"}) == 1  # shared
    assert tree(str(tmp_path / "dask")) == tree(tmp_path / "sequential")
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    mapped = [r for r in runs if r.name.startswith("evaluate-unit-")]
    assert len(mapped) == 2 and all(r.state.is_completed() for r in mapped)


@pytest.mark.slow
def test_memory_fsspec_root_gives_the_same_artifacts(prefect_server, sequential):
    from storage.verify import verify_tree

    reference, files = sequential
    root = "memory://distillery-scale-out-test"
    outcomes = distill(config=with_overrides(reference, {"runtime.artifact_root": root}))
    assert [o.state for o in outcomes] == ["Completed"] * len(outcomes)
    assert all(o.path.startswith("memory:///distillery-scale-out-test/") for o in outcomes)  # as the user names it
    assert tree(root) == files
    assert {f.status for f in verify_tree(root)} == {"ok"}
    fsspec.filesystem("memory").rm("/distillery-scale-out-test", recursive=True)


def test_gpu_tag_marks_cuda_runs_only(monkeypatch):
    from tasks.runtime import RuntimeConfig, device_tags, resolve_device

    for visible in (True, False):  # whatever this machine has: auto follows what CUDA reports
        monkeypatch.setattr(torch.cuda, "is_available", lambda: visible)
        assert device_tags(RuntimeConfig(device="auto")) == ({"gpu"} if visible else frozenset())
        assert resolve_device(RuntimeConfig(device="auto")).type == ("cuda" if visible else "cpu")
        assert device_tags(RuntimeConfig(device="cuda")) == {"gpu"}
        assert device_tags(RuntimeConfig(device="cpu")) == frozenset()


@pytest.mark.slow
def test_two_local_clusters_at_once_take_no_fixed_port(prefect_server, tiny_config):
    """Dask's scheduler serves health routes over HTTP even with the dashboard off; on the default
    port 8787 a second run's cluster warned that the port was taken (and a user's own dashboard
    would find it held by ours)."""
    import warnings

    import psutil

    from flows.scale_out import shared_cluster

    runtime = tiny_config.runtime.model_copy(update={"task_runner": "dask", "dask_workers": 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with shared_cluster(runtime) as first, shared_cluster(runtime) as second:
            listening = {c.laddr.port for c in psutil.Process().net_connections() if c.status == psutil.CONN_LISTEN}
    assert first.dask_address != second.dask_address
    assert 8787 not in listening
    assert not [str(w.message) for w in caught if "already in use" in str(w.message)]


@pytest.mark.slow
def test_local_workers_drop_only_the_heartbeat_race_of_their_own_shutdown(prefect_server, tiny_config):
    """A stopped Dask run once printed Dask's "Failed to communicate with scheduler during heartbeat"
    traceback: a heartbeat in flight as the worker closed its connections. Each local worker now
    drops that record while it closes, and nothing else."""
    import logging

    from distributed import Client
    from distributed.core import Status

    from flows.scale_out import HEARTBEAT_RACE, QuietShutdownRace, shared_cluster

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, message, (), None)

    def verdicts(dask_worker) -> list[bool]:
        [quiet] = [f for f in logging.getLogger("distributed.worker").filters if type(f).__name__ == "QuietShutdownRace"]
        return [quiet.filter(record(HEARTBEAT_RACE + ".")), quiet.worker is dask_worker]

    runtime = tiny_config.runtime.model_copy(update={"task_runner": "dask", "dask_workers": 1})
    with shared_cluster(runtime) as scaled, Client(scaled.dask_address) as client:
        assert list(client.run(verdicts).values()) == [[True, True]]  # installed, and a running worker keeps it

    class Closing:
        status = Status.closing

    quiet = QuietShutdownRace(Closing())
    assert not quiet.filter(record(HEARTBEAT_RACE + "."))
    assert quiet.filter(record("Unexpected exception during heartbeat. Closing worker."))


@pytest.mark.slow
def test_a_dask_sweep_trains_the_students_of_all_its_points_at_once(prefect_server, tiny_artifacts, tmp_path):
    """Two points (soft and hard labels) of two replicates on a 2-worker cluster: each point is built up
    to its students, then the sweep itself maps all four students in one go, and the points' distill
    runs only assemble them; the artifacts are those of the four runs made one after another."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.sweep import sweep

    one = ["evaluate.seeds=1"]
    for labels in ("soft", "hard"):
        for r in range(2):
            tiny_artifacts.copy_into(tmp_path / "sequential", *one, f"evaluate.labels={labels}", f"runtime.seed={r}",
                                     "teacher.seed=0")
    config = tiny_artifacts.config(*one, artifact_root=tmp_path / "dask")
    scaled = with_overrides(config, {"runtime.task_runner": "dask", "runtime.dask_workers": "2"})
    state = sweep(base=scaled, grids=[{"evaluate.labels": ["soft", "hard"]}], replicates=2, return_state=True)
    assert state.is_completed()
    assert [row["evaluate_state"] for row in state.result()] == ["Completed", "Completed"]
    assert {k: v for k, v in tree(str(tmp_path / "dask")).items() if not k.startswith("sweep/")} == tree(
        tmp_path / "sequential")
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    mapped = [r for r in runs if r.name.startswith("evaluate-unit-")]
    assert len(mapped) == 4 and all(r.state.is_completed() for r in mapped)  # by the sweep, not by each point
