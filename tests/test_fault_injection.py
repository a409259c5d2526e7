"""Kills at chosen points in every stage of the pipeline, and two runs of one config at once.

The pipeline is the ci_tiny preset run by :mod:`flows.without_prefect` in a child process (the stage
entries the Prefect flow calls, without a server, so one run takes seconds). One artifact root
takes a SIGKILL (a real kill, no clean-up) in each of the six stages in turn: every run resumes
what the previous kill left and is killed in the next stage. The points are where a stage has
left work behind that a rerun must finish or discard: half-way through the teacher's training
steps and through the statistics pass, with three of ten synthesis units stored, with one of
three relabel chunks stored, with the pruned store's data written but no manifest, and with one
of two student seeds stored. On an idle machine most stages last well under a second, too short
to aim a kill from outside, so the child SIGKILLs itself at that point (patched in by CHILD).
After each kill exactly the stages before the victim carry a manifest and nothing verifies as
damaged; a last run finishes, and every file is compared with a clean run's (the session's build
of the same config): data files byte for byte, manifests with their wall-clock ``seconds`` left out.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from storage.verify import verify_tree
from tests.file_trees import tree
from tests.conftest import needs_fashion_mnist

pytestmark = [needs_fashion_mnist, pytest.mark.slow]
STAGES = ("teacher", "stats", "synthesize", "relabel", "prune", "evaluate")
# Prune half the steps (so the prune stage runs); twelve relabel steps in three chunks of four.
OVERRIDES = ("prune.ratio=0.5", "relabel.chunk_steps=4")
# Run flows.without_prefect; with a stage named, SIGKILL this process at a chosen point inside it.
CHILD = """
import os
import signal
import sys
import tasks.stages.stats.stage
import tasks.stages.teacher.stage
from storage.artifacts import ArtifactStore
from storage.softlabels import SoftLabelWriter
victim, argv = sys.argv[1], sys.argv[2:]

def die_after_call(owner, name, call, when=lambda *args: True):
    real, calls = getattr(owner, name), []
    def wrapper(*args, **kwargs):
        result = real(*args, **kwargs)
        if when(*args):
            calls.append(name)
            if len(calls) == call:
                os.kill(os.getpid(), signal.SIGKILL)
        return result
    setattr(owner, name, wrapper)

if victim == "teacher":  # 8 of the 16 training steps taken
    die_after_call(tasks.stages.teacher.stage, "augment_batch", 8)
if victim == "stats":  # 2 of the 4 batches of the pass
    die_after_call(tasks.stages.stats.stage, "augment_batch", 2)
if victim == "synthesize":  # 3 of the 10 units stored
    die_after_call(ArtifactStore, "write_bytes", 3, when=lambda store, ref, name, *rest: name.startswith("units/"))
if victim in ("relabel", "prune"):  # the stage's first chunk stored
    die_after_call(SoftLabelWriter, "write_chunk", 1, when=lambda writer, *rest: f"/{victim}/" in writer.url)
if victim == "evaluate":  # 1 of the 2 seeds stored
    die_after_call(ArtifactStore, "write_bytes", 1, when=lambda store, ref, name, *rest: name.startswith("seeds/"))
from flows.without_prefect import main
sys.exit(main(argv))
"""


def arguments(root: Path) -> list[str]:
    """The command line of flows.without_prefect for this test's config on ``root``."""
    return ["--preset", "ci_tiny", "--artifact-root", str(root), *(a for o in OVERRIDES for a in ("--set", o))]


def pipeline(root: Path) -> list[str]:
    return [sys.executable, "-m", "flows.without_prefect", *arguments(root)]


def kill_in(root: Path, stage: str) -> str:
    """Run the pipeline on ``root`` until it SIGKILLs itself at CHILD's point in ``stage``; its output."""
    victim = subprocess.run([sys.executable, "-c", CHILD, stage, *arguments(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert victim.returncode == -signal.SIGKILL, f"not killed in {stage}: {victim.stdout[-3000:]}"
    return victim.stdout


def finished_stages(root: Path) -> set[str]:
    return {path.parts[-3] for path in root.glob("*/*/manifest.json")}


def test_a_kill_in_each_stage_resumes_to_the_clean_bytes(tmp_path, tiny_artifacts):
    tiny_artifacts.copy_into(tmp_path / "clean", *OVERRIDES)
    clean = tree(tmp_path / "clean")
    assert {name.split("/")[0] for name in clean} == set(STAGES)

    root = tmp_path / "killed"
    for index, stage in enumerate(STAGES):
        output = kill_in(root, stage)
        assert finished_stages(root) == set(STAGES[:index]), f"killed in {stage}: {output[-3000:]}"
        damaged = [f for f in verify_tree(str(root)) if f.status == "damaged"]
        assert not damaged, f"killed in {stage}: {damaged}"

    subprocess.run(pipeline(root), check=True, capture_output=True, timeout=600)
    again = tree(root)
    assert again.keys() == clean.keys(), sorted(again.keys() ^ clean.keys())[:5]
    different = [name for name in clean if again[name] != clean[name]]
    assert not different, f"differs from the clean run in {different[:5]}"
    assert {f.status for f in verify_tree(str(root))} == {"ok"}


def run_twice_at_once(root: Path | str) -> list[str]:
    """Two pipelines of this test's config on ``root`` at once; their outputs, once both succeeded with
    each of the six stages built by one of them and reused by the other."""
    runs = [subprocess.Popen(pipeline(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
    try:
        outputs = [run.communicate(timeout=600)[0] for run in runs]
    finally:  # a timeout must not leave either run going
        for run in runs:
            run.kill()
            run.wait()
    assert [run.returncode for run in runs] == [0, 0], outputs
    built = [line.split()[-1] for out in outputs for line in out.splitlines() if " building " in line]
    assert sorted(built) == sorted(set(built)) and len(built) == 6, built  # six stages, each built once
    assert "was built by another run meanwhile; reusing it" in "".join(outputs)
    return outputs


def test_two_concurrent_runs_build_each_stage_once_and_agree(tmp_path):
    root = tmp_path / "shared"
    outputs = run_twice_at_once(root)
    finals = [[line.split()[0] for line in out.splitlines() if "/" in line.split()[0] and len(line.split()) == 2]
              for out in outputs]
    assert finals[0] == finals[1] and len(finals[0]) == 6  # both report the same six artifacts
    assert all(f.status == "ok" for f in verify_tree(str(root)))
