"""Tensors in artifact files: a state dict, class statistics, a finished synthesis unit.

Written with ``torch.save`` to bytes (so through :meth:`ArtifactStore.write_bytes`: temporary
name, then rename) and read back with ``weights_only=True``: nothing but tensors, numbers,
strings and containers of them is ever unpickled.

    write_tensors(store, ref, MODEL, model.state_dict())
    state = read_tensors(store, ref, MODEL)
"""

from __future__ import annotations

import io
from typing import Any

import torch

from storage.artifacts import ArtifactError, ArtifactRef, ArtifactStore, rebuild_advice


def tensors_to_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def tensors_from_bytes(blob: bytes, *, origin: str) -> Any:
    """What :func:`tensors_to_bytes` wrote, on the CPU; ArtifactError naming ``origin`` when unreadable."""
    try:
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - zip, pickle and truncation failures surface differently
        raise ArtifactError(f"{origin} is not a readable tensor file ({type(err).__name__}: {err}); "
                            f"{rebuild_advice(origin.rsplit('/', 1)[0])}") from None


def write_tensors(store: ArtifactStore, ref: ArtifactRef, name: str, value: Any) -> None:
    store.write_bytes(ref, name, tensors_to_bytes(value))


def read_tensors(store: ArtifactStore, ref: ArtifactRef, name: str) -> Any:
    return tensors_from_bytes(store.read_bytes(ref, name), origin=store.path(ref, name))
