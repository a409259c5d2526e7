"""What a data split *is*: a digest of its files, which enters the fingerprint of every stage
that reads the split, so changed data is rebuilt and unchanged data is reused.

* Fashion-MNIST and CIFAR (a few packaged files): the SHA-256 of the files' bytes.
* ImageFolder trees: by default (``data.identity=listing``) a digest of the sorted listing of
  the split's image files, each as (path relative to ``data.root``, size, modification time in
  ns), plus Tiny-ImageNet's ``val_annotations.txt`` by content: adding, removing, replacing or
  touching one image changes it, and no image is opened. ``data.identity=content`` hashes every
  file's bytes instead (a touched but unchanged file keeps the identity; it costs a full read).

File hashes are memoised by (absolute path, size, mtime) in ``<cache>/file-digests.json``
(``$DISTILLERY_CACHE``, else ``$XDG_CACHE_HOME/distillery``, else ``~/.cache/distillery``), so
each file is read once however many runs ask.

    identity = split_identity(config, "train")    # SplitIdentity(digest="1a2b...", images=60000)
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from tasks.data.config import DataConfig, Split

if TYPE_CHECKING:
    from tasks.data.image_folder import ImageFolderSource

MEMO_FILE = "file-digests.json"
READ_BLOCK = 1 << 20


class SplitIdentity(BaseModel):
    """A split's digest and how many images the pipeline reads from it (after data.*_limit cuts)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    digest: str
    images: int

    def short(self) -> str:
        return self.digest[:8]


def cache_folder() -> Path:
    if os.environ.get("DISTILLERY_CACHE"):
        return Path(os.environ["DISTILLERY_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "distillery"


class DigestMemo:
    """SHA-256 of files, remembered by (absolute path, size, mtime_ns) across runs."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_folder() / MEMO_FILE
        try:
            self.entries: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}  # no memo yet, or a damaged one: it is only a cache
        self.changed = False

    def sha256(self, path: Path) -> str:
        status = path.stat()
        key, stamp = str(path.resolve()), [status.st_size, status.st_mtime_ns]
        entry = self.entries.get(key)
        if entry is not None and entry[:2] == stamp:
            return entry[2]
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(READ_BLOCK):
                digest.update(block)
        self.entries[key], self.changed = [*stamp, digest.hexdigest()], True
        return digest.hexdigest()

    def save(self) -> None:
        """Write the memo (whole, then renamed into place); a cache that cannot be written is skipped."""
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f"{self.path.name}.partial-{uuid.uuid4().hex[:8]}")
            partial.write_text(json.dumps(self.entries))
            partial.replace(self.path)
        except OSError:
            return
        self.changed = False


def split_identity(config: DataConfig, split: Split, *, memo: DigestMemo | None = None) -> SplitIdentity:
    """The identity of ``config``'s ``split`` (see the module docstring); DataError when it cannot be read."""
    # Imported here: SplitIdentity is part of requests that must load without torch.
    from tasks.data.datasets import packaged_files
    from tasks.data.image_folder import ImageFolderSource
    from tasks.data.splits import load_split

    memo = memo or DigestMemo()
    digest = hashlib.sha256(f"{config.name}/{split}\n".encode())
    files = packaged_files(config, split)
    source = load_split(config, split)
    if files is not None:
        for path in files:
            digest.update(f"{path.name}\0{memo.sha256(path)}\n".encode())
    else:
        assert isinstance(source, ImageFolderSource)
        _folder_digest(digest, source, Path(config.root or "."), content=config.identity == "content", memo=memo)
    memo.save()
    return SplitIdentity(digest=digest.hexdigest()[:32], images=len(source))


def _folder_digest(digest: "hashlib._Hash", source: ImageFolderSource, root: Path, *, content: bool,
                   memo: DigestMemo) -> None:
    prefix = f"{root}{os.sep}"
    for name in sorted(source.files.tolist()):
        relative = name[len(prefix):] if name.startswith(prefix) else name
        if content:
            digest.update(f"{relative}\0{memo.sha256(Path(name))}\n".encode())
        else:
            status = os.stat(name)
            digest.update(f"{relative}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    for annotations in source.annotations:
        digest.update(f"{annotations.name}\0{memo.sha256(annotations)}\n".encode())
