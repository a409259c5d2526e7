"""Kills at seeded random points across the whole pipeline, and two runs of one config at once.

The pipeline is the ci_tiny preset run by :mod:`flows.without_prefect` in a child process (the stage
entries the Prefect flow calls, without a server, so one trial takes seconds). Each kill trial
SIGKILLs it a seeded moment after it starts building a chosen stage (the trials cycle through
all six), checks that no artifact directory carries a manifest unless it
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
    return [sys.executable, "-m", "flows.without_prefect", "--preset", "ci_tiny", "--artifact-root", str(root),
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


def kill_during(command: list[str], stage: str, delay: float) -> str:
    """Start ``command``; SIGKILL it ``delay`` seconds after it starts building ``stage``; its output."""
    victim = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in victim.stdout:
        lines.append(line)
        if f" building {stage}/" in line:
            time.sleep(delay)
            break
    victim.kill()
    lines += victim.communicate()[0].splitlines(keepends=True)
    return "".join(lines)


def test_ten_kills_at_random_points_all_resume_to_the_clean_bytes(tmp_path):
    subprocess.run(pipeline(tmp_path / "clean"), check=True, capture_output=True, timeout=600)
    clean = contents(tmp_path / "clean")
    stages = ("teacher", "stats", "synthesize", "relabel", "prune", "evaluate")
    assert {name.split("/")[0] for name in clean} == set(stages)

    draw = random.Random(20261128)
    for trial in range(TRIALS):
        root = tmp_path / f"trial-{trial}"
        # Every stage is hit at least once; the moment inside it is seeded (stages last 0.1-10 s).
        stage, delay = stages[trial % len(stages)], draw.uniform(0.0, 1.5)
        output = kill_during(pipeline(root), stage, delay)
        assert f"building {stage}/" in output, f"trial {trial} never reached {stage}: {output[-2000:]}"
        damaged = [f for f in verify_tree(str(root)) if f.status == "damaged"]
        assert not damaged, f"trial {trial} (killed {delay:.2f} s into {stage}): {damaged}"

        subprocess.run(pipeline(root), check=True, capture_output=True, timeout=600)
        again = contents(root)
        assert again.keys() == clean.keys(), f"trial {trial}: {sorted(again.keys() ^ clean.keys())[:5]}"
        different = [name for name in clean if again[name] != clean[name]]
        assert not different, f"trial {trial} (killed {delay:.2f} s into {stage}) differs in {different[:5]}"


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
