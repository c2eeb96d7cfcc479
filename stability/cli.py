"""Small helpers shared by the command-line entry points."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import yaml


class UsageError(Exception):
    """Invalid input: reported as one line on stderr with exit code 2, never a traceback."""


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value), the value read as a YAML scalar or list."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set expects KEY=VALUE with a dotted key, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise UsageError(f"--set {key}: cannot read value {raw!r}: {str(exc).splitlines()[0]}") from None
    return [part for part in key.strip().split(".")], value


def apply_assignments(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply `--set` overrides on nested dicts (creating intermediate maps); returns data."""
    for text in assignments:
        path, value = parse_assignment(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UsageError(f"--set {'.'.join(path)}: {part!r} is not a map")
            node = child
        node[path[-1]] = value
    return data
