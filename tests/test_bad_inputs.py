"""The bad-input catalogue: each case through the real CLI entry, one message, the right exit.

Every case asserts: the exit code (2 for input refused before work starts, 1 for a failure met
while running), one message naming the problem and the fix, no traceback in anything printed,
and, where artifacts exist, every file not deliberately damaged is byte-identical afterwards.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path

import pytest

from flows.cli import main
from storage.artifacts import ArtifactRef, ArtifactStore
from tests.file_trees import digests
from tests.conftest import needs_fashion_mnist

pytestmark = needs_fashion_mnist
TINY = ["--preset", "ci_tiny"]


def run_cli(capfd, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, (out + err)[-3000:]
    return code, err


def _bad_yaml(tmp_path: Path) -> list[str]:
    (tmp_path / "bad.yaml").write_text("teacher: [epochs: 2\n")
    return ["run", "--config", str(tmp_path / "bad.yaml")]


def _list_yaml(tmp_path: Path) -> list[str]:
    (tmp_path / "list.yaml").write_text("- teacher\n- stats\n")
    return ["run", "--config", str(tmp_path / "list.yaml")]


def _unknown_section(tmp_path: Path) -> list[str]:
    (tmp_path / "typo.yaml").write_text("teachr:\n  epochs: 2\n")
    return ["run", "--config", str(tmp_path / "typo.yaml")]


def _empty_image_folder(tmp_path: Path) -> list[str]:
    (tmp_path / "images").mkdir()
    return ["run", "--set", "data.name=imagefolder", "--set", f"data.root={tmp_path / 'images'}"]


REFUSED_BEFORE_WORK = {
    "malformed YAML": (_bad_yaml, r"bad.yaml is not valid YAML"),
    "YAML that is not a mapping": (_list_yaml, r"must be a mapping of sections"),
    "unknown section": (_unknown_section, r"teachr: unknown field; did you mean teacher\?"),
    "unknown key": (lambda t: ["run", *TINY, "--set", "teacher.epochz=2"],
                    r"teacher.epochz: unknown field; did you mean teacher.epochs\?"),
    "a section's rule broken": (lambda t: ["run", *TINY, "--set", "data.name=imagefolder"],
                                r"  data: data.root is required for data.name='imagefolder': set it to the folder "
                                r"holding the data set\n$"),  # the section is not echoed back
    "wrong type": (lambda t: ["run", *TINY, "--set", "teacher.epochs=many"], r"teacher.epochs: .*integer"),
    "NaN value": (lambda t: ["run", *TINY, "--set", "synthesis.lr=.nan"], r"synthesis.lr: .*finite"),
    "prune ratio 1": (lambda t: ["run", *TINY, "--set", "prune.ratio=1"], r"prune.ratio: Input should be less than 1"),
    "negative prune ratio": (lambda t: ["run", *TINY, "--set", "prune.ratio=-0.5"], r"prune.ratio: .*greater than or equal to 0"),
    "missing data set": (lambda t: ["run", *TINY, "--set", f"data.root={t / 'nowhere'}"],
                         r"data: Fashion-MNIST not found .*dataset-fashion-mnist"),
    "empty image folder": (_empty_image_folder, r"data: .*images"),
    "unknown preset": (lambda t: ["run", "--preset", "fashion"], r"unknown preset 'fashion'; choose one of: bench, ci_tiny"),
    "missing config file": (lambda t: ["run", "--config", str(t / "none.yaml")], r"none.yaml does not exist"),
    "unknown stage": (lambda t: ["run", *TINY, "--until", "distil"], r"--until 'distil' is not a stage; choose one of"),
    "malformed grid": (lambda t: ["sweep", *TINY, "--grid", "synthesis.mode"], r"must look like section.field=V1,V2"),
    "bad grid value": (lambda t: ["sweep", *TINY, "--grid", "synthesis.ipc=10,0"], r"synthesis.ipc: .*greater than or equal to 1"),
    "unknown report spec": (lambda t: ["report", "nightly"], r"no report spec 'nightly'"),
    "IPC larger than a class": (lambda t: ["run", *TINY, "--set", "synthesis.mode=random_real", "--set", "synthesis.ipc=201"],
                                r"synthesis.ipc=201 exceeds the 200 training images of class T-shirt/top \(10 classes "
                                r"short\); lower synthesis.ipc, or raise data.train_per_class\n$"),
    "a grid point with an IPC larger than a class": (
        lambda t: ["sweep", *TINY, "--set", "synthesis.mode=random_real", "--grid", "synthesis.ipc=2,300"],
        r"grid point synthesis.ipc=300: synthesis.ipc=300 exceeds the 200 training images of class T-shirt/top"),
    "a grid value given twice": (lambda t: ["sweep", *TINY, "--grid", "prune.ratio=0,0.5,0"],
                                 r"--grid 'prune.ratio=0,0.5,0' gives 0 twice; give each value once"),
    "an empty grid value": (lambda t: ["sweep", *TINY, "--grid", "synthesis.mode=random_real,,lpld"],
                            r"must look like section.field=V1,V2"),
    "a root of an unknown scheme": (lambda t: ["run", *TINY, "--artifact-root", "nosuch://bucket/x"],
                                    r"nosuch://bucket/x cannot be used: ValueError: Protocol not known: nosuch; choose "
                                    r"another --artifact-root \(a folder or s3://bucket/prefix\)\n$"),
    "Dask on a memory root": (lambda t: ["run", *TINY, "--task-runner", "dask", "--artifact-root", "memory://bad-inputs"],
                              r"memory://bad-inputs lives in this process's memory, which Dask workers cannot reach"),
    "bench-labels on a missing root": (lambda t: ["bench-labels", "--artifact-root", str(t / "nowhere")],
                                       r"artifact root .*nowhere is not a folder"),
    "full data with soft labels": (lambda t: ["run", *TINY, "--set", "evaluate.train_set=full"],
                                   r"set evaluate.labels=hard"),
    "unwritable artifact root": (lambda t: ["run", *TINY, "--artifact-root", "/sys/distillery-artifacts"],
                                 r"artifact root /sys/distillery-artifacts is not writable.*--artifact-root"),
    "artifact root under a file": (lambda t: ["run", *TINY, "--artifact-root", str(t / "bad.yaml" / "root")],
                                   r"artifact root .*bad.yaml/root is inside .*bad.yaml, a file, not a folder; .*--artifact-root"),
    "verify a missing root": (lambda t: ["verify", "--artifact-root", str(t / "nowhere")], r"does not exist"),
    "verify a file as the root": (lambda t: ["verify", "--artifact-root", str(t / "bad.yaml")],
                                  r"artifact root .*bad.yaml is not a folder; give the folder passed as --artifact-root"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_BEFORE_WORK))
def test_input_refused_before_any_work(case, tmp_path, capfd):
    make, message = REFUSED_BEFORE_WORK[case]
    (tmp_path / "bad.yaml").write_text("x: 1\n")  # some cases need a plain file in the way
    argv = make(tmp_path)
    if argv[0] in ("run", "sweep") and "--artifact-root" not in argv:
        argv += ["--artifact-root", str(tmp_path / "a")]
    code, err = run_cli(capfd, *argv)
    assert code == 2, err
    assert err.startswith("distillery: ") and re.search(message, err), err
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_a_refused_export_leaves_no_folder_behind(tmp_path, capfd):
    (tmp_path / "a-file").write_text("in the way of the artifact root")
    code, err = run_cli(capfd, "export", *TINY, "--artifact-root", str(tmp_path / "a-file"),
                        "--to", str(tmp_path / "new" / "deep" / "out"))
    assert code == 2 and f"artifact root {tmp_path / 'a-file'} is a file, not a folder" in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]  # the export target's folders were probed, then removed


def test_an_unreachable_prefect_api_is_named_before_any_work(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    code, err = run_cli(capfd, "run", *TINY, "--artifact-root", str(tmp_path / "a"))
    assert code == 2 and "the Prefect API at http://127.0.0.1:9/api does not answer" in err
    assert "unset PREFECT_API_URL" in err and not (tmp_path / "a").exists()  # nothing made, not even the root


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_artifacts) -> Path:
    """A finished ci_tiny pipeline (the session's); each case works on a copy."""
    root = tmp_path_factory.mktemp("built") / "a"
    tiny_artifacts.copy_into(root)
    return root


@pytest.mark.slow
def test_the_built_pipeline_is_what_run_finds(built, tmp_path, capfd, prefect_server):
    root = _copy(built, tmp_path)
    before = digests(root)
    assert run_cli(capfd, "run", *TINY, "--artifact-root", str(root))[0] == 0
    assert digests(root) == before  # every stage found on disk, nothing added or rebuilt


def _copy(built: Path, tmp_path: Path) -> Path:
    shutil.copytree(built, tmp_path / "a")
    return tmp_path / "a"


def _only(root: Path, stage: str) -> Path:
    [folder] = [p for p in (root / stage).iterdir() if p.is_dir()]
    return folder


def _unchanged_except(before: dict[str, str], after: dict[str, str], *damaged: Path, root: Path) -> None:
    skip = {str(p.relative_to(root)) for p in damaged}
    assert {k: v for k, v in before.items() if not any(k.startswith(s) for s in skip)} == \
        {k: v for k, v in after.items() if k in before and not any(k.startswith(s) for s in skip)}


@pytest.mark.slow
def test_a_corrupt_manifest_names_the_artifact_and_the_fix(built, tmp_path, capfd, prefect_server):
    root = _copy(built, tmp_path)
    manifest = _only(root, "teacher") / "manifest.json"
    manifest.write_text("{ not json")
    before = digests(root)
    code, err = run_cli(capfd, "run", *TINY, "--artifact-root", str(root))
    assert code == 1 and "artifact teacher/" in err and "manifest.json is not valid JSON" in err
    assert f"delete {manifest.parent} and rerun the same command to rebuild it" in err
    assert digests(root) == before


def _flip_four_bytes(labels: Path) -> str:
    """Flip four bytes in the middle of the store's first logits chunk; its path in the artifact."""
    chunk = next(p for p in sorted((labels / "labels.zarr" / "logits").rglob("*")) if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    for offset in range(4):
        data[len(data) // 2 + offset] ^= 0xFF
    chunk.write_bytes(bytes(data))
    return str(chunk.relative_to(labels))


@pytest.mark.slow
def test_flipped_bytes_are_found_by_verify_and_stop_a_run_that_reuses_them(built, tmp_path, capfd, prefect_server):
    root = _copy(built, tmp_path)
    labels = _only(root, "relabel")
    chunk = _flip_four_bytes(labels)
    code, out = main(["verify", "--artifact-root", str(root)]), capfd.readouterr().out
    assert code == 1 and f"damaged    relabel/{labels.name}" in out and "fails its checksum" in out
    assert "delete each damaged artifact's directory and rerun the same command" in out
    before = digests(root)
    code, err = run_cli(capfd, "run", *TINY, "--artifact-root", str(root))  # every stage built: all would be reused
    assert code == 1 and f"artifact relabel/{labels.name} under {root} is damaged: {chunk} fails its checksum" in err
    assert f"delete {labels} and rerun the same command to rebuild it" in err
    assert digests(root) == before


@pytest.mark.slow
def test_export_refuses_a_damaged_chunk_and_writes_nothing(built, tmp_path, capfd, prefect_server):
    root = _copy(built, tmp_path)
    labels = _only(root, "relabel")
    chunk = _flip_four_bytes(labels)
    code, err = run_cli(capfd, "export", *TINY, "--artifact-root", str(root), "--to", str(tmp_path / "out"))
    assert code == 1 and f"{chunk} fails its checksum" in err and f"delete {labels} and rerun" in err
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["a"]


@pytest.mark.slow
def test_an_artifact_whose_input_is_gone_is_kept_by_a_rerun_as_verify_says(built, tmp_path, capfd, prefect_server):
    root = _copy(built, tmp_path)
    stats = _only(root, "stats")
    synthesize = digests(_only(root, "synthesize"))
    shutil.rmtree(stats)
    code, out = main(["verify", "--artifact-root", str(root)]), capfd.readouterr().out
    assert code == 1 and f"input stats (stats/{stats.name}) is missing" in out
    assert "fix: where only an input is missing, rerun the same command" in out and "delete each" not in out
    assert run_cli(capfd, "run", *TINY, "--artifact-root", str(root))[0] == 0
    assert digests(_only(root, "synthesize")) == synthesize and digests(root) == digests(built)


def test_a_truncated_chunk_is_found_by_verify(built, tmp_path, capfd):
    root = _copy(built, tmp_path)
    images = _only(root, "synthesize") / "images.zarr" / "images" / "c" / "0" / "0" / "0" / "0"
    images.write_bytes(images.read_bytes()[:10])
    code, out = main(["verify", "--artifact-root", str(root)]), capfd.readouterr().out
    assert code == 1 and "images.zarr/images/c/0/0/0/0 has 10 bytes, the manifest says" in out
    assert out.count("damaged    ") == 1


@pytest.mark.slow
def test_labels_from_another_run_are_refused_naming_both_image_sets(built, tmp_path, capfd, tiny_artifacts, prefect_server):
    root = _copy(built, tmp_path)
    other = tmp_path / "other"
    tiny_artifacts.copy_into(other, "runtime.seed=1", until="relabel")  # another run: seed 1
    mine = _only(root, "relabel")
    shutil.rmtree(mine / "labels.zarr")
    shutil.copytree(_only(other, "relabel") / "labels.zarr", mine / "labels.zarr")
    store, ref = ArtifactStore(root), ArtifactRef(stage="relabel", fingerprint=mine.name)
    manifest = {**store.read_manifest(ref), "files": store.file_checksums(ref)}  # checksums pass: only the
    (mine / "manifest.json").write_text(json.dumps(manifest))  # store's own attributes can tell
    shutil.rmtree(_only(root, "evaluate"))
    before = digests(root)
    code, err = run_cli(capfd, "run", *TINY, "--artifact-root", str(root))
    assert code == 1 and f"made from images {_only(other, 'synthesize').name}" in err
    assert f"this run uses images {_only(root, 'synthesize').name}" in err
    _unchanged_except(before, digests(root), root / "evaluate", root=root)


@pytest.mark.slow
def test_a_full_disk_mid_run_names_the_root_and_keeps_finished_stages(built, tmp_path, capfd, monkeypatch, prefect_server):
    root = _copy(built, tmp_path)
    shutil.rmtree(_only(root, "synthesize"))
    before = digests(root)
    real_write = ArtifactStore.write_bytes

    def full_after_teacher(self, ref, name, data):
        if ref.stage == "synthesize":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, ref, name, data)

    monkeypatch.setattr(ArtifactStore, "write_bytes", full_after_teacher)
    code, err = run_cli(capfd, "run", *TINY, "--artifact-root", str(root))
    assert code == 1 and f"the artifact root {root} is full" in err and "rerun the same command to resume" in err
    assert digests(root) == before  # nothing finished was touched
    assert not any((root / "synthesize").rglob("manifest.json"))


@pytest.mark.slow
def test_a_nan_during_synthesis_stops_with_the_fix(built, tmp_path, capfd, monkeypatch, prefect_server):
    import torch

    import tasks.stages.synthesize.stage as synthesize

    root = _copy(built, tmp_path)
    real_load = synthesize.load_teacher

    def nan_teacher(store, ref, device):
        model = real_load(store, ref, device)
        with torch.no_grad():
            model.classifier.weight.fill_(float("nan"))
        return model

    monkeypatch.setattr(synthesize, "load_teacher", nan_teacher)
    before = digests(root)
    code, err = run_cli(capfd, "run", *TINY, "--artifact-root", str(root), "--set", "synthesis.mode=sre2l")
    assert code == 1 and "lower synthesis.lr" in err
    _unchanged_except(before, digests(root), root=root)
