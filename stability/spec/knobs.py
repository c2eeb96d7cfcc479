"""Knob paths: one way to name a place in a spec or a trial config, as a tuple of keys.

`--set train.distillation.type=hard`, a nested recipe section in YAML and a sampled knob of the
plan all name the same place, `("train", "distillation", "type")`. Dotted text appears only at
the edges (the command line, result column names, messages).
"""

from __future__ import annotations

from typing import Any

KnobPath = tuple[str, ...]


def parse_path(text: str) -> KnobPath:
    """`"a.b.c"` -> `("a", "b", "c")`; ValueError on an empty part."""
    parts = tuple(part.strip() for part in text.strip().split("."))
    if not all(parts):
        raise ValueError(f"{text!r} is not a dotted key (e.g. train.mixup)")
    return parts


def dotted(path: KnobPath) -> str:
    return ".".join(path)


def set_path(data: dict[str, Any], path: KnobPath, value: Any) -> None:
    """Set `data[a][b][c] = value`, creating missing maps; ValueError if a step is not a map."""
    node = data
    for depth, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"{dotted(path)}: {dotted(path[:depth + 1])} is not a map")
        node = child
    node[path[-1]] = value


def nest(flat: dict[KnobPath, Any]) -> dict[str, Any]:
    """`{("train", "mixup"): 0.8}` -> `{"train": {"mixup": 0.8}}`."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        set_path(out, path, value)
    return out


def flatten(value: dict[str, Any], is_section) -> dict[KnobPath, Any]:
    """The leaves of nested maps by path; `is_section(path, item)` says whether a map at `path` is a
    section to walk into (else it is a leaf value, e.g. a distribution map)."""
    flat: dict[KnobPath, Any] = {}

    def walk(node: dict[str, Any], prefix: KnobPath) -> None:
        for key, item in node.items():
            path = (*prefix, *parse_path(str(key)))  # a dotted key inside a section is a path too
            if isinstance(item, dict) and is_section(path, item):
                walk(item, path)
            else:
                flat[path] = item

    walk(value, ())
    return flat
