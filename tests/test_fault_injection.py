"""Kills at seeded random points across the whole pipeline, and two runs of one config at once.

The pipeline is the ci_tiny preset run by :mod:`flows.plain` in a child process (the stage
entries the Prefect flow calls, without a server, so one trial takes seconds). Each kill trial
SIGKILLs it at a seeded time, checks that no artifact directory carries a manifest unless it
verifies whole, reruns to completion and compares every file with a clean run's: data files
byte for byte, manifests with their wall-clock ``seconds`` left out.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.verify import verify_tree
from tests.conftest import needs_fashion_mnist

pytestmark = [needs_fashion_mnist, pytest.mark.slow]
TRIALS = 10


def pipeline(root: Path) -> list[str]:
    return [sys.executable, "-m", "flows.plain", "--preset", "ci_tiny", "--artifact-root", str(root),
            "--set", "prune.ratio=0.5"]


def contents(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (locks aside); manifests without their wall-clock seconds."""
    files = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.endswith(".lock"):
            continue
        data = path.read_bytes()
        if path.name == "manifest.json":
            manifest = json.loads(data)
            manifest.pop("seconds")
            data = json.dumps(manifest, sort_keys=True).encode()
        files[str(path.relative_to(root))] = data
    return files


def test_ten_kills_at_random_points_all_resume_to_the_clean_bytes(tmp_path):
    started = time.monotonic()
    subprocess.run(pipeline(tmp_path / "clean"), check=True, capture_output=True, timeout=600)
    clean_seconds = time.monotonic() - started
    clean = contents(tmp_path / "clean")
    assert {name.split("/")[0] for name in clean} == {"teacher", "stats", "synthesize", "relabel", "prune", "evaluate"}

    draw = random.Random(20261128)
    stages_hit = set()
    for trial in range(TRIALS):
        root = tmp_path / f"trial-{trial}"
        # Stratified: trial i dies somewhere in the i-th tenth of a clean run's wall time.
        kill_at = clean_seconds * (trial + draw.random()) / TRIALS
        victim = subprocess.Popen(pipeline(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            victim.wait(timeout=kill_at)
        except subprocess.TimeoutExpired:
            victim.kill()
        output = victim.communicate()[0]
        stages_hit |= {line.split()[-1].split("/")[0] for line in output.splitlines() if " building " in line}
        damaged = [f for f in (verify_tree(str(root)) if root.exists() else []) if f.status == "damaged"]
        assert not damaged, f"trial {trial} (killed at {kill_at:.1f} s): {damaged}"

        subprocess.run(pipeline(root), check=True, capture_output=True, timeout=600)
        again = contents(root)
        assert again.keys() == clean.keys(), f"trial {trial}: {sorted(again.keys() ^ clean.keys())[:5]}"
        different = [name for name in clean if again[name] != clean[name]]
        assert not different, f"trial {trial} (killed at {kill_at:.1f} s) differs in {different[:5]}"
    assert len(stages_hit) >= 4, f"the kills should land across the pipeline, hit only {sorted(stages_hit)}"


def test_two_concurrent_runs_build_each_stage_once_and_agree(tmp_path):
    root = tmp_path / "shared"
    runs = [subprocess.Popen(pipeline(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    built = [line.split()[-1] for out in outputs for line in out.splitlines() if " building " in line]
    assert sorted(built) == sorted(set(built)) and len(built) == 6, built  # six stages, each built once
    assert "was built by another run meanwhile; reusing it" in "".join(outputs)
    finals = [[line.split()[0] for line in out.splitlines() if "/" in line.split()[0] and len(line.split()) == 2]
              for out in outputs]
    assert finals[0] == finals[1] and len(finals[0]) == 6  # both report the same six artifacts
    assert all(f.status == "ok" for f in verify_tree(str(root)))
