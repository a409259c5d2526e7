"""Refusals before start-up (flows/preflight.py): input that would fail inside a stage is refused by
the real `distillery` process with exit 2 and one line, before Prefect's temporary server starts.

Each case runs ``python -m flows.cli`` as a user does, with no PREFECT_API_URL and a fresh
PREFECT_HOME: a started server would leave its database there, so an empty PREFECT_HOME proves
the refusal came first. The seconds each refusal took are printed (``-s``); docs/operations.md
has the figures.

    .venv/bin/python -m pytest tests/test_refusals.py -s
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from tests.conftest import needs_fashion_mnist

pytestmark = needs_fashion_mnist
PROJECT_ROOT = Path(__file__).resolve().parent.parent
TINY = ["--preset", "ci_tiny", "--set", "runtime.threads=1"]
IMAGE_FOLDER = ["--set", "data.name=imagefolder", "--set", "data.val_fraction=0"]  # val/ is the test split


def _image_folder(root: Path) -> Path:
    for split in ("train", "val"):
        for k, name in enumerate(("cat", "dog")):
            for i in range(4 if split == "train" else 2):
                (root / split / name).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (24, 24), (40 + 100 * k, 30 * i, 90)).save(root / split / name / f"{i}.png")
    return root


def _empty_class(tmp: Path) -> tuple[list[str], str]:
    root = _image_folder(tmp / "data")
    for png in (root / "train" / "dog").iterdir():
        png.unlink()
    return (["run", *IMAGE_FOLDER, "--set", f"data.root={root}"],
            f"data: class folder {root / 'train' / 'dog'} holds no images")


def _undecodable(tmp: Path) -> tuple[list[str], str]:
    root = _image_folder(tmp / "data")
    (root / "val" / "cat" / "1.png").write_bytes(b"not an image, whatever its name says")
    return (["run", *IMAGE_FOLDER, "--set", f"data.root={root}"],
            f"data: cannot decode image {root / 'val' / 'cat' / '1.png'} (")


def _truncated_jpeg(tmp: Path) -> tuple[list[str], str]:
    root = _image_folder(tmp / "data")
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG")
    cut = root / "train" / "dog" / "cut.jpg"  # its header is whole: PIL's verify() passes it
    cut.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 4 // 5])
    return (["run", *IMAGE_FOLDER, "--set", f"data.root={root}"],
            f"data: cannot decode image {cut} (the file ends before the JPEG's end-of-image marker")


def _ipc_over_a_class(tmp: Path) -> tuple[list[str], str]:
    root = _image_folder(tmp / "data")  # 4 training images a class
    return (["run", *IMAGE_FOLDER, "--set", f"data.root={root}", "--set", "synthesis.mode=random_real",
             "--set", "synthesis.ipc=5"],
            "distillery: synthesis.ipc=5 exceeds the 4 training images of class cat (2 classes short); lower synthesis.ipc\n")


def _foreign_weights(tmp: Path) -> tuple[list[str], str]:
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp / "resnet18.pt")
    return (["run", "--set", f"teacher.weights={tmp / 'resnet18.pt'}"],
            f"distillery: teacher.weights {tmp / 'resnet18.pt'} do not fit teacher.model=convnet on this data set: "
            "features.0.weight [16, 1, 3, 3] is missing from the weights; give weights of that architecture")


def _no_cuda(tmp: Path) -> tuple[list[str], str]:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return ["run", "--device", "cuda"], "distillery: runtime.device=cuda but no CUDA device is visible"


def _unwritable_export(tmp: Path) -> tuple[list[str], str]:
    (tmp / "a-file").write_text("not a folder")
    return (["export", "--to", str(tmp / "a-file" / "out")],
            f"distillery: export target {tmp / 'a-file' / 'out'} cannot be made: its folder {tmp / 'a-file'} "
            "is a file, not a folder; give --to a folder you can write")


@pytest.mark.parametrize("case", [_empty_class, _undecodable, _truncated_jpeg, _ipc_over_a_class, _foreign_weights,
                                  _no_cuda, _unwritable_export],
                         ids=lambda case: case.__name__.strip("_"))
def test_refused_before_prefect_starts_with_exit_2_and_one_line(case, tmp_path):
    argv, message = case(tmp_path)
    home = tmp_path / "prefect-home"
    home.mkdir()
    env = {**os.environ, "PREFECT_HOME": str(home), "DISTILLERY_PROGRESS": "log"}
    env.pop("PREFECT_API_URL", None)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flows.cli", argv[0], *TINY, *argv[1:], "--artifact-root",
                           str(tmp_path / "artifacts")], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    print(f"\n{case.__name__.strip('_')}: exit {done.returncode} after {time.monotonic() - started:.1f} s "
          f"(load {os.getloadavg()[0]:.1f})")
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stdout == "" and done.stderr.count("\n") == 1 and len(done.stderr) < 400, done.stderr
    assert message in done.stderr, done.stderr
    assert list(home.iterdir()) == []  # no temporary server ever started: it would have made its database here


QUICK = {  # refusals that need neither a file's contents nor torch: answered without importing torch or Prefect
    "bad value": (["run", "--set", "teacher.epochs=0"], "teacher.epochs: Input should be greater than or equal to 1"),
    "missing data folder": (["run", "--set", "data.root={tmp}/nowhere"], "data: Fashion-MNIST not found in"),
    "export target exists": (["export", "--to", "{tmp}"], "already exists; give a new folder to --to"),
    "unwritable artifact root": (["run", "--artifact-root", "/proc/distillery"], "artifact root /proc/distillery"),
    "Dask on a memory root": (["run", "--task-runner", "dask", "--artifact-root", "memory://refusal"],
                              "which Dask workers cannot reach"),
    "unknown report spec": (["report", "nightly"], "no report spec 'nightly': give a YAML file or one of"),
}


@pytest.mark.parametrize("case", sorted(QUICK))
def test_a_refusal_that_reads_no_file_imports_neither_torch_nor_prefect(case, tmp_path):
    argv, message = QUICK[case]
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    probe = ("import json, sys\nfrom flows.cli import main\ncode = main(sys.argv[1:])\n"
             "print(json.dumps([code, sorted(m for m in ('torch', 'torchvision', 'prefect') if m in sys.modules)]))")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([sys.executable, "-c", probe, *argv], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert message in done.stderr, done.stderr
    code, imported = json.loads(done.stdout)
    assert code == 2 and imported == []
