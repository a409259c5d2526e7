"""The deployment list (deploy/deployments.yaml), deploy/prefect.yaml written from it, and what
`distillery serve` refuses, checked without a server (tests/test_server_deploy.py runs them on one).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from deploy.deployments import DEPLOYMENTS, PREFECT_YAML, prefect_yaml
from flows.config import PresetRef, grid_points, with_overrides
from flows.serve import PROJECT_ROOT, ServeError, deployment_entries

NIGHTLY = {"cron": "0 3 * * *", "timezone": "UTC", "slug": "nightly", "active": True}


def _deployment_file() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text())


def test_deployments_name_presets_and_every_one_resolves():
    presets = {path.stem: yaml.safe_load(path.read_text()) for path in (PROJECT_ROOT / "deploy" / "presets").glob("*.yaml")}
    for entry in DEPLOYMENTS:
        given = entry["parameters"].get("config") or entry["parameters"]["base"]
        assert set(given) == {"preset", "overrides"}, f"{entry['name']}: copies config values instead of naming a preset"
        assert given["preset"] in presets
        config = PresetRef.model_validate(given).resolve()
        for grid in entry["parameters"].get("grids", []):
            for point in grid_points(grid):
                with_overrides(config, point)  # every sweep point is a valid config


def test_prefect_yaml_is_the_list_written_out():
    assert PREFECT_YAML.read_text() == prefect_yaml(), "run `.venv/bin/python -m deploy.deployments` to rewrite it"


def test_the_file_declares_schedule_limit_pool_and_working_directory():
    loaded = _deployment_file()
    by_name = {entry["name"]: entry for entry in loaded["deployments"]}
    assert NIGHTLY in by_name["fashion-mnist"]["schedules"]
    assert all(entry["concurrency_limit"] == 1 and entry["work_pool"]["name"] == "distillery"
               for entry in by_name.values())
    assert loaded["pull"] == [{"prefect.deployments.steps.set_working_directory":
                               {"directory": "{{ project-root.stdout }}"}}]
    assert [entry.name for entry in deployment_entries()] == list(by_name)  # serve builds the same entries


@pytest.mark.parametrize("entry, message", [
    ({"name": "x", "entrypoint": "flows/distill.py"}, r"deployment x: entrypoint: String should match"),
    ({"name": "x", "entrypoint": "flows/distill.py:distill", "schedules": [{"cron": "0 3 * * *", "interval": 60}]},
     r"deployment x: schedules.0: .*exactly one of cron, interval"),
    ({"entrypoint": "flows/distill.py:distill"}, r"deployment #1: name: Field required"),
])
def test_serve_refuses_a_bad_deployment_entry(entry, message):
    with pytest.raises(ServeError, match=message):
        deployment_entries([entry])


def test_serve_names_an_unreachable_server(capfd):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli import main

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert main(["serve"]) == 2
    err = capfd.readouterr().err
    assert "the Prefect API at http://127.0.0.1:9/api does not answer" in err and "Traceback" not in err
