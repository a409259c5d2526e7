"""Writes deploy/prefect.yaml (for `prefect deploy` and a process work pool) from the one list of
deployments, deploy/deployments.yaml, which `distillery serve` reads too (tests fail when the
written file and the list differ):

    .venv/bin/python -m deploy.deployments            # rewrite deploy/prefect.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from flows.serve import deployment_list

PREFECT_YAML = Path(__file__).with_name("prefect.yaml")
POOL = {"name": "distillery", "work_queue_name": "default", "job_variables": {}}
PREFECT_VERSION = "3.9.1"

DEPLOYMENTS: list[dict[str, Any]] = deployment_list()

HEADER = """\
# Written by `python -m deploy.deployments` from deploy/deployments.yaml; edit that list, not this.
# For `prefect deploy` (a process work pool and its workers); `distillery serve` builds the same
# deployments from the list itself. Deploy from the repository root:
#
#   .venv/bin/python -m prefect work-pool create distillery --type process
#   .venv/bin/python -m prefect --no-prompt deploy --all --prefect-file deploy/prefect.yaml
#   (trap - INT; exec .venv/bin/python -m prefect worker start --pool distillery) &
#
# Parameters name a preset of deploy/presets; the flow reads it when a run starts. A relative
# `runtime.artifact_root` (the default `artifacts`) means under the repository root.
"""


def prefect_yaml() -> str:
    """deploy/prefect.yaml's text: the project's build and pull steps, then every deployment on the pool."""
    project = {
        "name": "distillery",
        "prefect-version": PREFECT_VERSION,
        # Record the absolute repository root when deploying (hence: deploy from the root), so a
        # worker started in any folder changes into it before loading the entrypoint.
        "build": [{"prefect.deployments.steps.run_shell_script":
                   {"id": "project-root", "script": "pwd", "stream_output": False}}],
        "push": None,
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ project-root.stdout }}"}}],
        "deployments": [{**entry, "work_pool": POOL} for entry in DEPLOYMENTS],
    }
    return HEADER + yaml.dump(project, Dumper=_Plain, sort_keys=False, width=110)


class _Plain(yaml.SafeDumper):
    """Writes a shared value (the pool) out in full each time, not as a YAML alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


if __name__ == "__main__":
    PREFECT_YAML.write_text(prefect_yaml())
    print(f"wrote {PREFECT_YAML}", file=sys.stderr)
