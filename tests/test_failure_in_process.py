"""A failure met while running, in a real `distillery` process: exit 1, the one message, no traceback.

The in-process bad-input catalogue (tests/test_bad_inputs.py) runs after the test session has set
up Prefect's logging; a fresh process sets it up only when a flow first runs, after the CLI has
started. This case runs ``python -m flows.cli`` as a user does, so the terminal handlers it checks
are the ones Prefect installs there.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from PIL import Image

from tests.conftest import needs_fashion_mnist

pytestmark = needs_fashion_mnist
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _scrambled_png(path: Path) -> None:
    """A PNG whose chunks and checksums are whole but whose compressed pixels are not zlib data:
    the header check before start-up passes it, decoding it (in the teacher stage) fails."""
    Image.new("RGB", (24, 24), (120, 60, 30)).save(path)
    data = bytearray(path.read_bytes())
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4: at])[0]
    data[at + 4: at + 4 + length] = bytes(range(length))
    data[at + 4 + length: at + 8 + length] = struct.pack(">I", zlib.crc32(bytes(data[at: at + 4 + length])))
    path.write_bytes(bytes(data))


def test_a_failure_mid_run_prints_one_message_and_no_traceback(tmp_path):
    root = tmp_path / "data"
    for split, count in (("train", 6), ("val", 2)):
        for k, name in enumerate(("cat", "dog")):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (24, 24), (40 + 100 * k, 30 * i, 90)).save(root / split / name / f"{i}.png")
    _scrambled_png(root / "train" / "dog" / "3.png")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "DISTILLERY_PROGRESS": "log"}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--preset", "ci_tiny", "--set", "runtime.threads=1",
                           "--set", "data.name=imagefolder", "--set", "data.val_fraction=0", "--set", f"data.root={root}",
                           "--artifact-root", str(tmp_path / "artifacts")],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    printed = done.stdout + done.stderr
    assert done.returncode == 1, printed[-3000:]
    assert f"distillery: DataError: cannot decode image {root / 'train' / 'dog' / '3.png'}" in done.stderr, printed[-3000:]
    assert "Traceback" not in printed, printed[-3000:]
    assert "distillery: rerun with --debug for the full traceback" in done.stderr
