"""Imports run one way, flows -> tasks -> storage (DESIGN §2): read from the source's syntax tree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"tasks": {"flows"}, "storage": {"flows", "tasks"}}  # package -> what it may not import


def imported_packages(path: Path) -> set[str]:
    """Top-level package of every module ``path`` imports, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_goes_back_up(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert len(files) > 3, f"found no source under {ROOT / package}"
    upward = {str(f.relative_to(ROOT)): sorted(imported_packages(f) & FORBIDDEN[package]) for f in files}
    assert not {f: up for f, up in upward.items() if up}, "imports against flows -> tasks -> storage"
