"""Where an artifact root lives: a local folder or an object store, as one fsspec filesystem.

A root is a local path (``artifacts``, ``/data/distillery``) or an fsspec URL
(``s3://bucket/prefix``, ``memory://x``). Local roots are used exactly as before, as plain
paths. Remote roots get filesystems without a listings cache, so a manifest or a lease written by
another process (or machine) is seen at once. S3 credentials and endpoint come from the standard
AWS settings, read by botocore: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or
``AWS_PROFILE``, ``~/.aws``), ``AWS_ENDPOINT_URL`` (MinIO, moto, Ceph), ``AWS_DEFAULT_REGION``.

    location = open_root("s3://bucket/distillery")   # Location(fs, path, is_local=False)
    zarr.open_group(zarr_store(url), mode="r")
    why = unusable_root("s3://bucket/distillery")    # None, or one sentence naming root and fix
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.spec import AbstractFileSystem

LOCAL_PROTOCOLS = {"file", "local"}
S3_ENVIRONMENT = {"endpoint_url": "AWS_ENDPOINT_URL", "key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY",
                  "token": "AWS_SESSION_TOKEN"}
CREDENTIALS_FIX = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to a key that may write the bucket"


@dataclass(frozen=True)
class Location:
    """An opened root: its filesystem, its path on that filesystem, and whether it is a local folder."""

    fs: AbstractFileSystem
    path: str
    is_local: bool


def is_local_root(root: str) -> bool:
    return (fsspec.core.split_protocol(str(root))[0] or "file") in LOCAL_PROTOCOLS


def open_root(root: str | os.PathLike[str]) -> Location:
    root = str(root)
    if is_local_root(root):
        fs, path = fsspec.core.url_to_fs(root)
        return Location(fs, os.path.abspath(path), True)
    fs, path = fsspec.core.url_to_fs(root, **remote_options(root))
    return Location(fs, path.rstrip("/"), False)


def remote_options(url: str) -> dict[str, Any]:
    """fsspec options of a remote root: no listings cache (others' writes are visible at once); for S3
    the AWS variables of the moment, given explicitly so that fsspec's cache of filesystems keeps one
    per endpoint and key (unset ones are None: botocore's usual chain, profiles included)."""
    options: dict[str, Any] = {"use_listings_cache": False}
    if fsspec.core.split_protocol(url)[0] in ("s3", "s3a"):
        options.update({name: os.environ.get(variable) or None for name, variable in S3_ENVIRONMENT.items()})
        options["max_concurrency"] = 1  # else s3fs sends a HEAD before every whole-object GET, to split big ones
    return options


def zarr_store(url: str) -> Any:
    """What ``zarr.open_group`` opens for ``url``: the path itself when local, else an fsspec store
    with :func:`remote_options` (the same credentials and endpoint as :func:`open_root`)."""
    if is_local_root(url):
        return url
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(url, storage_options=remote_options(url))


def unusable_root(root: str) -> str | None:
    """Why a remote root cannot hold artifacts (unreachable endpoint, missing bucket, refused
    credentials), as one sentence naming the root and the fix; None when a probe object can be
    written and removed. Local roots are checked by the caller (their errors are disk errors)."""
    if is_local_root(root):
        return None
    try:
        location = open_root(root)
        probe = f"{location.path}/.write-probe-{uuid.uuid4().hex[:8]}"
        location.fs.pipe_file(probe, b"ok")
        location.fs.rm_file(probe)
    except Exception as err:  # noqa: BLE001 - botocore, aiohttp and fsspec each raise their own types
        return f"artifact root {root} cannot be used: {_reason(err, fsspec.core.split_protocol(root)[0] or '')}"
    return None


def _reason(err: BaseException, protocol: str) -> str:
    """What went wrong and what to do, for the three usual faults of S3; anything else as it came."""
    text = f"{type(err).__name__}: {err}"
    lowered = text.lower()
    if protocol not in ("s3", "s3a"):  # the AWS advice below would mislead
        fix = (f"install the fsspec package for {protocol}:// or use a folder or s3:// root" if isinstance(err, ImportError)
               else "choose another --artifact-root (a folder or s3://bucket/prefix)")
        return f"{text}; {fix}"
    if "nosuchbucket" in lowered or "bucket does not exist" in lowered or isinstance(err, FileNotFoundError):
        return f"the bucket does not exist ({text}); create it or name an existing bucket in --artifact-root"
    if isinstance(err, PermissionError) or any(word in lowered for word in ("accessdenied", "invalidaccesskeyid",
                                                                            "signaturedoesnotmatch", "credentials")):
        return f"the credentials were refused ({text}); {CREDENTIALS_FIX}"
    if any(word in lowered for word in ("connect", "endpoint", "timeout", "timed out")):
        return f"the endpoint does not answer ({text}); check AWS_ENDPOINT_URL and that the server runs"
    return f"{text}; {CREDENTIALS_FIX}, or choose another --artifact-root"
