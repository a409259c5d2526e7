"""What tests compare of a folder: its files by relative path, read the same way everywhere.

Lock files and run histories (``history/``: each run adds a row) are left out, and each ``manifest.json`` is compared
without its wall-clock ``seconds``, the one field two identical builds never share (a manifest
that is not JSON is compared as it is). Roots may
be local paths or any fsspec URI (``memory://``, ``s3://``).

    assert tree(killed_root) == tree(clean_root)      # {path: bytes}
    before = digests(root); ...; assert digests(root) == before
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from storage.locations import open_root


def tree(root: str | Path) -> dict[str, bytes]:
    """Every file under ``root`` but locks, by path relative to it; manifests without their seconds."""
    location = open_root(root)  # remote: no listings cache, so files others just wrote are seen
    fs, base = location.fs, location.path.rstrip("/")
    files = {}
    for path in sorted(fs.find(base)):
        name = path[len(base) + 1:]
        if name.startswith((".locks/", "history/")) or name.endswith(".lock"):
            continue
        data = fs.cat_file(path)
        if name.rsplit("/", 1)[-1] == "manifest.json":
            data = _without_seconds(data)
        files[name] = data
    return files


def _without_seconds(manifest: bytes) -> bytes:
    """The manifest re-serialised without ``seconds``; a damaged one as it is (tests damage them)."""
    try:
        parsed = json.loads(manifest)
    except ValueError:
        return manifest
    parsed.pop("seconds", None)
    return json.dumps(parsed, sort_keys=True).encode()


def digests(root: str | Path) -> dict[str, str]:
    """:func:`tree` as SHA-256 hex digests, for comparing large trees before and after."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in tree(root).items()}
