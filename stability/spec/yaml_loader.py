"""Bounded YAML: safe YAML whose cost is bounded for any input (docs/reliability.md).

A study file, a `--set` value and the saved study.yaml are read through `load_yaml`, which
refuses, as one-line `SpecError`s naming the source and the line:
- text over `MAX_SPEC_BYTES` (parsing a 50 MB spec would take minutes and gigabytes);
- aliases that expand to more than `MAX_ALIAS_VALUES` values: a few hundred bytes of nested
  aliases ("billion laughs") become billions of values once anything walks the data as a tree
  (validation, hashing a trial id, an error message);
- recursive aliases (a collection that contains itself) and nesting deeper than `MAX_DEPTH`;
- duplicate keys in a mapping (YAML would silently keep the last one).

The checks run on the composed node graph, where an alias is a second reference to the same
node, so they cost one pass over the distinct nodes and nothing is expanded before it is judged.
Merge keys (`<<: *anchor`) keep working: their values count towards the alias budget.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from stability.cli import first_line
from stability.spec.errors import SpecError, short

MAX_SPEC_BYTES = 1_000_000  # the built-in studies are 1-4 kB
MAX_ALIAS_VALUES = 10_000  # values added by expanding aliases (the built-ins' merge keys add < 100)
MAX_DEPTH = 50  # nesting levels (a study nests about 7 deep)

# libyaml's parser when it is installed (about 5x faster on large input); the checks and the
# constructor are the same Python code either way.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Refused(Exception):
    """A limit of the bounded loader; the message ends with the line of `node` when it has one."""

    def __init__(self, message: str, node: Node | None = None, where: str = "line"):
        mark = getattr(node, "start_mark", None)
        super().__init__(f"{message} ({where} {mark.line + 1})" if mark is not None else message)


class BoundedLoader(_SafeLoader):
    """The safe loader plus the checks of this module, run before anything is constructed."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        self._check_graph(node)
        return self.construct_document(node)

    def _duplicate_key(self, node: MappingNode) -> None:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode):
                continue  # a collection as a key: the constructor refuses it
            if key_node.tag == "tag:yaml.org,2002:merge":
                key: Any = "<<"  # `<<: *anchor`: its keys may be overridden here, but once per map
            else:
                key = self.construct_object(key_node)  # so `yes`/`true` or `1`/`0x1` are the same key
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue
            if duplicate:
                raise _Refused(f"duplicate key {short(key)}", key_node)

    def _check_graph(self, root: Node) -> None:
        """Depth, recursion, alias expansion and duplicate keys, in one iterative pass over the
        distinct nodes (scalars, most of any large input, take the short path)."""
        size: dict[int, int] = {}  # id(collection) -> values in its subtree, aliases expanded
        height: dict[int, int] = {}
        refs: dict[int, int] = {}  # id(collection) -> places that hold it (> 1: an alias target)
        nodes: dict[int, Node] = {}
        scalars: set[int] = set()
        visiting: set[int] = set()
        stack: list[tuple[Node, list[Node] | None]] = [(root, None)]
        while stack:
            node, kids = stack.pop()
            key = id(node)
            if kids is not None:  # every child is done: sum up
                total, deepest = 1, 0
                for kid in kids:
                    if kid.__class__ is ScalarNode:
                        total += 1
                    else:
                        total += size[id(kid)]
                        deepest = max(deepest, height[id(kid)])
                size[key], height[key] = total, deepest + 1
                if deepest + 1 > MAX_DEPTH:
                    raise _Refused(f"nested deeper than {MAX_DEPTH} levels", node)
                visiting.discard(key)
                continue
            if node.__class__ is ScalarNode:  # the root alone
                scalars.add(key)
                continue
            refs[key] = refs.get(key, 0) + 1
            if key in size:
                continue
            if key in visiting:
                raise _Refused("a recursive alias (a collection that contains itself)", node)
            visiting.add(key)
            nodes[key] = node
            if isinstance(node, MappingNode):
                self._duplicate_key(node)
                kids = [part for pair in node.value for part in pair]
            else:
                kids = list(node.value)
            stack.append((node, kids))
            for kid in reversed(kids):
                if kid.__class__ is ScalarNode:
                    scalars.add(id(kid))
                else:
                    stack.append((kid, None))
        expanded = size.get(id(root), 1)
        added = expanded - len(size) - len(scalars)
        if added > MAX_ALIAS_VALUES:
            biggest = max((k for k, n in refs.items() if n > 1), key=lambda k: size[k], default=id(root))
            raise _Refused(f"YAML aliases expand to {added:,} more values; the limit is {MAX_ALIAS_VALUES:,}",
                           nodes.get(biggest), "anchor at line")


def check_size(text: str, source: str, what: str = "the spec") -> None:
    """SpecError when `text` is over MAX_SPEC_BYTES (UTF-8)."""
    n = len(text) if len(text) > MAX_SPEC_BYTES else len(text.encode("utf-8", "surrogatepass"))
    if n > MAX_SPEC_BYTES:
        raise SpecError(f"{source}: {what} is {n:,} bytes; the limit is {MAX_SPEC_BYTES:,} bytes (1 MB)")


def load_yaml(text: str, source: str) -> Any:
    """YAML text -> plain data (safe types only) within the limits above; SpecError otherwise."""
    check_size(text, source)
    try:
        return yaml.load(text, Loader=BoundedLoader)  # a SafeLoader subclass: safe types only
    except _Refused as exc:
        raise SpecError(f"{source}: {exc}") from None
    except RecursionError:  # the pure-Python composer nests one call per level
        raise SpecError(f"{source}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # a scalar the constructor cannot convert (an int of over 4300 digits)
        raise SpecError(f"{source}: invalid YAML: {short(str(exc), quote=False)}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise SpecError(f"{source}: invalid YAML{line}: {short(problem, quote=False)}") from None
