"""Security basics, checked on the source: safe loading only, no code from configs, local binds."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

from tasks.data import DataError
from tasks.data.datasets import _unpickle

REPO = Path(__file__).resolve().parents[1]  # not the working directory: pytest may run from anywhere
SOURCE = sorted(p for folder in ("flows", "tasks", "storage", "deploy") for p in (REPO / folder).rglob("*.py"))


def _calls(pattern: str) -> list[str]:
    return [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in SOURCE
            for n, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(pattern, line) and not line.lstrip().startswith("#")]


def test_the_checks_read_every_package_of_the_source():
    packages = {p.relative_to(REPO).parts[0] for p in SOURCE}
    assert packages == {"flows", "tasks", "storage", "deploy"}, packages
    assert {"flows/cli.py", "tasks/stages/teacher/stage.py", "storage/artifacts.py"} <= {str(p.relative_to(REPO)) for p in SOURCE}


def test_every_torch_load_is_weights_only():
    loads = _calls(r"torch\.load\(")
    assert loads and all("weights_only=True" in line for line in loads), loads


def test_configs_are_data_no_eval_exec_or_unsafe_yaml():
    assert _calls(r"(?<![.\w`])(eval|exec)\(") == []  # model.eval() is fine
    assert _calls(r"yaml\.(unsafe_load|full_load)\(") == []
    for call in _calls(r"yaml\.load\("):  # only with a loader that builds plain data
        path, loader = call.split(":")[0], re.search(r"Loader=([\w.]+)\)", call)
        assert loader, call
        found = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        for name in loader.group(1).split("."):
            found = getattr(found, name)
        assert issubclass(found, yaml.SafeLoader), call
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
