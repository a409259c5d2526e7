"""Operating Distillery on a real Prefect server: deploy/prefect.yaml, a process worker, the
dashboard in a browser, and `distillery serve` (deploy/deployments.yaml is their one definition).

The slow tests share one `prefect server start` (127.0.0.1, a free port, a temporary
PREFECT_HOME, the scheduler service off so no nightly run can start mid-test) and run in file
order: deploy, a worker started outside the repository runs the ci-tiny deployment, headless
Chromium renders its results artifact, then serve (last: it replaces the pool deployments), stopped by SIGINT and by SIGTERM.
Every process is started in its own session and stopped with SIGINT (then SIGKILL for anything
left in its group); the worker starts with SIGINT restored, serve with SIGINT ignored (as `&` in
a script leaves it), which it must undo. tests/test_deployments.py checks the deployment list, the
file written from it and serve's refusals without a server.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psutil
import pytest

from flows.serve import PROJECT_ROOT, ServeError, dashboard_note, deployment_entries, refuse_pooled
from tests.conftest import needs_fashion_mnist
from tests.processes import free_port, is_alive, spawn, stop_group, wait_for

PREFECT = [sys.executable, "-m", "prefect"]  # the venv has no prefect script when Prefect is a system package
DISTILLERY = str(Path(sys.executable).with_name("distillery"))
NAMES = ("distill/fashion-mnist", "distill/ci-tiny", "sweep/modes")
NIGHTLY = {"cron": "0 3 * * *", "timezone": "UTC", "slug": "nightly", "active": True}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _run_to_end(client, deployment_name: str, parameters: dict[str, Any], timeout: float, log: Path):
    deployment = client.read_deployment_by_name(deployment_name)
    run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
    return wait_for(lambda: (r := client.read_flow_run(run.id)).state.is_final() and r, timeout,
                    f"flow run of {deployment_name}", log=log)


def _with_root(config: dict[str, Any], root: Path) -> dict[str, Any]:
    """A deployment's preset reference, its artifact root moved to ``root``."""
    return {**config, "overrides": [*config["overrides"], f"runtime.artifact_root={root}"]}


def test_serve_names_the_dashboard_and_what_a_server_on_another_port_needs():
    assert dashboard_note("http://127.0.0.1:4200/api") == "dashboard: http://127.0.0.1:4200"
    note = dashboard_note("http://127.0.0.1:4300/api")
    assert note.startswith("dashboard: http://127.0.0.1:4300 (") and "PREFECT_UI_API_URL=http://127.0.0.1:4300/api" in note


# --- one real server for the slow tests ------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home / "home"), "PREFECT_API_URL": url,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",  # the schedule is listed, never fired
           "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = home / "server.log"
    proc = spawn([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log, home)
    try:
        wait_for(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, 120, "server health", proc, log)
        yield SimpleNamespace(url=url, env=env, home=home)
    finally:
        stop_group(proc)


@pytest.fixture(scope="module")
def client(server):
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(server.url) as prefect_client:
        yield prefect_client


def _cli(argv: list[str], server, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, env=server.env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}\n{output}"
    return done


@pytest.fixture(scope="module")
def pool(server) -> None:
    _cli([*PREFECT, "work-pool", "create", "distillery", "--type", "process"], server, PROJECT_ROOT)


@pytest.fixture(scope="module")
def worker(server, pool, tmp_path_factory):
    """A worker started outside the repository (its runs find the code through the pull step)."""
    folder = tmp_path_factory.mktemp("worker")
    log = folder / "worker.log"
    proc = spawn([*PREFECT, "worker", "start", "--pool", "distillery", "--name", "test-worker"],
                  server.env, log, folder)
    yield SimpleNamespace(proc=proc, folder=folder, log=log)
    stop_group(proc)


@pytest.fixture(scope="module")
def deployed(server, pool, worker) -> str:
    """`prefect deploy --all` from the repository root (the worker boots meanwhile)."""
    done = _cli([*PREFECT, "--no-prompt", "deploy", "--all", "--prefect-file", "deploy/prefect.yaml"],
                server, PROJECT_ROOT)
    return done.stdout


def _change_one_test_pixel(fashion: Path) -> None:
    """One pixel of the first Fashion-MNIST test image, one grey level brighter (still a valid IDX file)."""
    path = fashion / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[16] = (raw[16] + 1) % 256  # the first pixel after the 16-byte header
    path.write_bytes(gzip.compress(bytes(raw), mtime=0))


@pytest.fixture(scope="module")
def worker_run(server, client, deployed, worker):
    """The worker runs ci-tiny twice on a copy of Fashion-MNIST (artifact root and data root overridden),
    one test pixel changed between the runs, then is stopped with SIGINT."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    fashion = worker.folder / "fashion-mnist"
    shutil.copytree("/usr/share/datasets/fashion-mnist", fashion)
    try:
        config = client.read_deployment_by_name("distill/ci-tiny").parameters["config"]
        root = worker.folder / "artifacts"
        given = {"config": {**_with_root(config, root), "overrides": [*_with_root(config, root)["overrides"],
                                                                      f"data.root={fashion}"]}}
        run = _run_to_end(client, "distill/ci-tiny", given, 300, worker.log)
        _change_one_test_pixel(fashion)
        second = _run_to_end(client, "distill/ci-tiny", given, 300, worker.log)
    finally:
        code, seconds = stop_group(worker.proc)

    def artifacts_of(flow_run) -> list:
        return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))

    return SimpleNamespace(run=run, artifacts=artifacts_of(run), second=second, second_artifacts=artifacts_of(second),
                           root=root, log=worker.log, stop_code=code, stop_seconds=seconds)


@pytest.mark.slow
def test_deploy_registers_every_deployment_with_its_schedule_limit_and_pull_step(deployed, client):
    for name in NAMES:
        assert f"Deployment '{name}' successfully created" in deployed
    nightly = client.read_deployment_by_name("distill/fashion-mnist")
    schedules = [{"cron": s.schedule.cron, "timezone": s.schedule.timezone, "slug": s.slug, "active": s.active}
                 for s in nightly.schedules]
    assert NIGHTLY in schedules
    assert nightly.global_concurrency_limit.limit == 1 and nightly.work_pool_name == "distillery"
    assert nightly.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}]
    assert "DistilleryConfig" in nightly.parameter_openapi_schema["definitions"]  # the UI's typed form


@needs_fashion_mnist
@pytest.mark.slow
def test_a_worker_started_elsewhere_runs_the_ci_tiny_deployment(worker_run):
    run = worker_run.run
    assert run.state.is_completed(), f"{run.state.type}: {run.state.message}\n{worker_run.log.read_text()[-3000:]}"
    listed = sorted(f"{a.key or '-'}:{a.type}" for a in worker_run.artifacts)
    summary = [a for a in worker_run.artifacts if a.key == "distill-summary"]
    assert summary and summary[0].type == "table", listed
    stages = list(dict.fromkeys(row["stage"] for row in json.loads(summary[0].data)))  # a row per stage and metric
    assert stages == ["teacher", "stats", "synthesize", "relabel", "evaluate"], listed
    grid = [a for a in worker_run.artifacts if a.key == "image-grid"]
    assert grid and grid[0].data.startswith("| class | images |"), listed
    assert "| T-shirt/top | ![T-shirt/top](data:image/png;base64," in grid[0].data  # inline, not file://
    assert set(json.loads(summary[0].data)[0]) == {"stage", "state", "built in s", "metric", "value", "fingerprint"}
    assert all(any((worker_run.root / stage).glob("*/manifest.json")) for stage in stages)
    assert worker_run.stop_code is not None and worker_run.stop_seconds < 30, "the worker ignored SIGINT"


@needs_fashion_mnist
@pytest.mark.slow
def test_a_rerun_after_a_data_change_rebuilds_evaluate_and_adds_a_history_row(worker_run):
    second = worker_run.second
    assert second.state.is_completed(), f"{second.state.type}: {second.state.message}"
    by_key = {a.key: a for a in worker_run.second_artifacts}
    states = {row["stage"]: row["state"] for row in json.loads(by_key["distill-summary"].data)}
    assert {stage for stage, state in states.items() if state != "Cached"} == {"evaluate"}, states
    rows = json.loads(by_key["history-ci-tiny"].data)  # the deployment's history, newest first
    assert len(rows) == 2 and rows[0]["rebuilt"] == "evaluate" and rows[1]["rebuilt"] != "none"
    assert rows[0]["data changed"].startswith("test: 1,000 images, digest ") and rows[1]["data changed"] == ""
    assert rows[0]["data"].split()[0] == rows[1]["data"].split()[0]  # the same train split, another test split
    assert by_key["history-plot-ci-tiny"].data.startswith("![test top-1 over the runs of ci-tiny](data:image/png;base64,")


def _artifact_page(server: SimpleNamespace, artifact: Any, tmp_path: Path,
                   window: str | None = None) -> tuple[str, list[str], str]:
    """The artifact's dashboard page, the headless Chromium command that renders it, and its DOM
    (at ``window`` size, e.g. "1400,900", when given); skips without Chromium."""
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (bash deploy/install.sh test installs the Debian package)")
    page = server.url.removesuffix("/api") + f"/artifacts/artifact/{artifact.id}"
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000"]
    size = [f"--window-size={window}"] if window else []
    dom = subprocess.run([*browser, *size, "--dump-dom", page], capture_output=True, text=True, timeout=90).stdout
    return page, browser, dom


@needs_fashion_mnist
@pytest.mark.slow
def test_the_dashboard_shows_the_results_artifact(worker_run, server, tmp_path):
    from PIL import Image

    summary = next(a for a in worker_run.artifacts if a.key == "distill-summary")
    page, browser, dom = _artifact_page(server, summary, tmp_path)
    for expected in ("distill-summary", "evaluate", "test_top1", summary.description):
        assert expected in dom, f"{expected!r} not on {page}: {dom[-2000:]}"
    widest = max((str(cell) for row in json.loads(summary.data) for cell in row.values()), key=len)
    assert len(widest) <= 40, f"the dashboard cuts cells this wide instead of wrapping them: {widest!r}"
    shot = tmp_path / "artifact.png"
    subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1280,900", page],
                   capture_output=True, timeout=90)
    with Image.open(shot) as image:
        assert image.size == (1280, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) blank"


@needs_fashion_mnist
@pytest.mark.slow
def test_the_dashboard_shows_each_class_name_beside_its_images(worker_run, server, tmp_path):
    grid = next(a for a in worker_run.artifacts if a.key == "image-grid")
    page, _, dom = _artifact_page(server, grid, tmp_path, window="1400,900")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))  # what the page shows as text (alt texts left out)
    for name in ("T-shirt/top", "Trouser", "Sneaker", "Ankle boot"):
        assert f" {name} " in text, f"{name!r} not shown on {page}: {text[-2000:]}"
    assert dom.count('src="data:image/png;base64,') >= 10, f"no images on {page}"


@needs_fashion_mnist
@pytest.mark.slow
def test_the_dashboard_shows_the_deployments_history(worker_run, server, tmp_path):
    from PIL import Image

    table = next(a for a in worker_run.second_artifacts if a.key == "history-ci-tiny")
    page, browser, dom = _artifact_page(server, table, tmp_path)
    rows = json.loads(table.data)
    for expected in ("history-ci-tiny", "students 1x", rows[0]["date"], rows[1]["date"], rows[0]["data changed"]):
        assert expected in dom, f"{expected!r} not on {page}: {dom[-2000:]}"
    shot = tmp_path / "history.png"
    subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1400,900", page], capture_output=True, timeout=90)
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) blank"


@needs_fashion_mnist
@pytest.mark.slow
def test_serve_runs_the_same_deployments_from_one_process_and_stops_on_sigint(server, client, deployed, worker_run,
                                                                              tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.url}), pytest.raises(ServeError, match="deployed to a work pool"):
        refuse_pooled(deployment_entries())  # what `distillery serve` checks first (exit 2)
    for name in NAMES:
        client.delete_deployment(client.read_deployment_by_name(name).id)

    log = tmp_path / "serve.log"
    # SIGINT ignored, as `distillery serve &` from a script leaves it: serve must undo that.
    serve = spawn([DISTILLERY, "serve"], server.env, log, cwd=tmp_path, sigint=signal.SIG_IGN)
    try:
        wait_for(lambda: all(client.read_deployment_by_name(n) for n in NAMES), 120, "served deployments", serve, log)
        nightly = client.read_deployment_by_name("distill/fashion-mnist")
        assert NIGHTLY["cron"] in [s.schedule.cron for s in nightly.schedules]
        assert nightly.global_concurrency_limit.limit == 1 and nightly.work_pool_name is None
        config = client.read_deployment_by_name("distill/ci-tiny").parameters["config"]
        run = _run_to_end(client, "distill/ci-tiny", {"config": _with_root(config, tmp_path / "a"), "until": "teacher"},
                          240, log)
        assert run.state.is_completed(), f"{run.state.message}\n{log.read_text()[-3000:]}"
        assert any((tmp_path / "a" / "teacher").glob("*/manifest.json"))
        assert not (tmp_path / "a" / "stats").exists()  # the `until` override was applied
        # The run is final on the server before its process has exited: a SIGINT to the group then lands in
        # that child's atexit hooks (a KeyboardInterrupt traceback from zarr's cleanup), not in serve.
        served = psutil.Process(serve.pid)
        wait_for(lambda: not any(is_alive(c) for c in served.children(recursive=True)), 60,
                 "the finished run's process to exit", serve, log)
    finally:
        code, seconds = stop_group(serve)
    tail = log.read_text()[-2000:]
    assert code == 130 and seconds < 30, f"serve did not stop on SIGINT ({code}, {seconds:.0f} s)\n{tail}"
    assert "serve stopped by SIGINT" in tail and "Traceback" not in tail
    assert client.read_deployment_by_name("distill/ci-tiny").paused  # Prefect pauses served deployments on exit


@needs_fashion_mnist
@pytest.mark.slow
def test_serve_stopped_by_sigterm_pauses_its_deployments_and_leaves_no_process(server, client, tmp_path):
    log = tmp_path / "serve.log"
    serve = spawn([DISTILLERY, "serve"], server.env, log, cwd=tmp_path)
    try:
        wait_for(lambda: not client.read_deployment_by_name("distill/ci-tiny").paused, 120, "serving again", serve, log)
        wait_for(lambda: "serving" in log.read_text(), 30, "serve's first line", serve, log)
        children = psutil.Process(serve.pid).children(recursive=True)
        os.kill(serve.pid, signal.SIGTERM)  # what systemd, Kubernetes and `timeout` send
        code = serve.wait(60)
    finally:
        stop_group(serve)
    tail = log.read_text()[-2000:]
    assert code == 143, f"serve exited {code} on SIGTERM\n{tail}"
    assert "serve stopped by SIGTERM" in tail and "Traceback" not in tail
    assert all(client.read_deployment_by_name(name).paused for name in ("distill/ci-tiny", "distill/fashion-mnist"))
    assert not [c for c in children if is_alive(c)], "serve left processes"
