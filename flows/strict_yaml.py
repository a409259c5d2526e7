"""YAML as config files, presets and report specs are read: safe types only, and a key given
twice in one mapping is an error (plain ``yaml.safe_load`` keeps the last one silently).

    load_yaml("teacher:\\n  epochs: 2\\n  epochs: 4\\n")
    # DuplicateKeyError: key 'epochs' is given twice in one mapping, on lines 2 and 3; keep one
"""

from __future__ import annotations

from typing import Any

import yaml

_MERGE = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:  # "<<: *base" merges may be overridden by explicit keys
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise DuplicateKeyError(f"key {key!r} is given twice in one mapping, on lines {first_line[key]} "
                                        f"and {line}; keep one")
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """``text`` parsed like ``yaml.safe_load``; DuplicateKeyError for a repeated key."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
