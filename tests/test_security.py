"""Security basics, checked on the source: safe loading only, no code from configs, local binds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tasks.data import DataError, _unpickle

SOURCE = sorted(p for folder in ("flows", "tasks", "storage", "deploy") for p in Path(folder).rglob("*.py"))


def _calls(pattern: str) -> list[str]:
    return [f"{p}:{n}: {line.strip()}" for p in SOURCE for n, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(pattern, line) and not line.lstrip().startswith("#")]


def test_every_torch_load_is_weights_only():
    loads = _calls(r"torch\.load\(")
    assert loads and all("weights_only=True" in line for line in loads), loads


def test_configs_are_data_no_eval_exec_or_unsafe_yaml():
    assert _calls(r"(?<![.\w`])(eval|exec)\(") == []  # model.eval() is fine
    assert _calls(r"yaml\.(load|unsafe_load|full_load)\(") == []
    assert _calls(r"pickle\.loads?\(") == []  # CIFAR batches go through a restricted unpickler


def test_nothing_binds_all_interfaces():
    assert _calls(r"0\.0\.0\.0") == []


def test_the_cifar_unpickler_refuses_anything_but_arrays(tmp_path):
    import os
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Boom()}))
    with pytest.raises(DataError, match=r"data_batch_1 \(holds (posix|os).system, which a CIFAR batch never does\)"):
        _unpickle(tmp_path / "data_batch_1")
