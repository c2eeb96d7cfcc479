"""Small multiples: which arms share a panel (a facet) of a report figure.

The paper draws one panel per model size (ViT_P vs ViT_C at 1, 4 and 18 GF, RegNetY beside them)
rather than one panel of nine curves. Model names say the size and the family when they end in a
size token (`vit_p_1gf`, `vit_c_tiny`, `regnety_400mf`, `deit_tiny_distilled`): the family is the
name without it. Facets group arms (a model, or a model in one study or at one split value) by:

- `size`: one facet per size, each holding every family at that size (the compared pair); a size
  only one model has (RegNetY 16 GF beside ViT 18 GF) joins the facet of the nearest size that
  holds no model of its family;
- `family`: one facet per family, its sizes side by side;
- `model`: one facet per model;
- `none`: one facet holding every arm;
- `auto`: `size` when names give two sizes or more and a size holds several families; else `none`
  up to MAX_PER_FACET models; else `family` when that keeps facets small; else `model`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

FACET_BY = ("auto", "size", "family", "model", "none")
MAX_PER_FACET = 6  # models one facet (and one legend row group) reads well with
SIZE_WORDS = ("nano", "pico", "micro", "xxs", "xs", "tiny", "mini", "small", "medium", "base", "large", "xl", "huge",
              "giant", "gigantic")
UNITS = {"": 1.0, "k": 1e-6, "m": 1e-3, "mf": 1e-3, "g": 1.0, "gf": 1.0, "b": 1.0, "t": 1e3, "tf": 1e3}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)(k|mf|m|gf|g|b|tf|t)?$", re.IGNORECASE)


class Facet(NamedTuple):
    """A panel of a figure: its title and the arms it draws, in legend order."""

    title: str
    arms: tuple[str, ...]


class ModelName(NamedTuple):
    family: str
    size: str | None  # the size token as written (lower case), None when the name has none
    rank: float  # orders sizes: GF for numbers with a unit, the index of a size word otherwise


def size_rank(token: str) -> float | None:
    """The order of a size token (None: not a size): 400mf < 1gf < 1.6gf; tiny < small < base."""
    token = token.lower()
    if token in SIZE_WORDS:
        return float(SIZE_WORDS.index(token))
    found = _SIZE.match(token)
    if not found:
        return None
    return float(found.group(1)) * UNITS[(found.group(2) or "").lower()]


def parse_model(model: str) -> ModelName:
    """Family and size of a model name: the last `_`- or `-`-separated token that is a size (not
    the first), e.g. vit_p_1gf -> (vit_p, 1gf), deit_tiny_distilled -> (deit_distilled, tiny)."""
    tokens = re.split(r"[_-]", model)
    for i in range(len(tokens) - 1, 0, -1):
        rank = size_rank(tokens[i])
        if rank is not None:
            return ModelName("_".join(tokens[:i] + tokens[i + 1:]), tokens[i].lower(), rank)
    return ModelName(model, None, math.nan)


def _by_size(models: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(title, models) per size, smallest first; a size held by one model alone joins the nearest
    size without a model of its family (titled with it); models without a size last, together."""
    parsed = {m: parse_model(m) for m in models}
    sizes: dict[str, list[str]] = {}
    for m in models:
        if parsed[m].size is not None:
            sizes.setdefault(parsed[m].size, []).append(m)
    rank = {s: parsed[ms[0]].rank for s, ms in sizes.items()}
    titles = {s: s for s in sizes}
    for size, members in sorted(sizes.items(), key=lambda kv: rank[kv[0]]):
        if len(members) != 1 or len(sizes) < 2:
            continue
        family = parsed[members[0]].family
        hosts = [s for s, ms in sizes.items() if s != size and len(ms) > 1
                 and family not in {parsed[m].family for m in ms}]
        if hosts:
            host = min(hosts, key=lambda s: (abs(math.log(max(rank[s], 1e-9) / max(rank[size], 1e-9))), -rank[s]))
            sizes[host] = sizes[host] + members
            titles[host] = f"{titles[host]} (+ {members[0]})"
            del sizes[size]
    facets = [(titles[s], _ordered(ms)) for s, ms in sorted(sizes.items(), key=lambda kv: rank[kv[0]])]
    rest = [m for m in models if parsed[m].size is None]
    return facets + ([("other", rest)] if rest else [])


def _by_family(models: Sequence[str]) -> list[tuple[str, list[str]]]:
    families: dict[str, list[str]] = {}
    for m in models:
        families.setdefault(parse_model(m).family, []).append(m)
    return [(f, sorted(ms, key=lambda m: parse_model(m).rank)) for f, ms in families.items()]


def _ordered(models: Sequence[str]) -> list[str]:
    """Models by family, then size."""
    return sorted(dict.fromkeys(models), key=lambda m: (parse_model(m).family, parse_model(m).rank, m))


def facet_mode(models: Sequence[str], by: str = "auto") -> str:
    """The grouping `by` stands for: itself unless `auto` (see the module docstring)."""
    if by not in FACET_BY:
        raise ValueError(f"facet_by must be one of {', '.join(FACET_BY)}, got {by!r}")
    if by != "auto":
        return by
    models = _ordered(models)
    if len(models) < 2:
        return "none"
    sized = _by_size(models)
    if len(sized) >= 2 and any(len(ms) >= 2 for _, ms in sized):
        return "size"
    if len(models) <= MAX_PER_FACET:
        return "none"
    families = _by_family(models)
    if len(families) >= 2 and max(len(ms) for _, ms in families) <= MAX_PER_FACET:
        return "family"
    return "model"


def display_order(models: Sequence[str], by: str = "auto") -> list[str]:
    """The models in the order the figures show them: facet by facet (smallest size first when
    faceted by size), within a facet by family then size; with one facet, by family then size."""
    found = facets({m: m for m in dict.fromkeys(models)}, by)
    order = [m for f in found for m in f.arms]
    return order if len(found) > 1 else _ordered(order)


def facets(arm_models: Mapping[str, str], by: str = "auto") -> list[Facet]:
    """The facets of the arms (arm -> its model), every arm in exactly one; within a facet, arms
    by family and size (the given order for arms of one model, and for `none`)."""
    arms = list(arm_models)
    models = _ordered(arm_models.values())
    mode = facet_mode(models, by)
    if mode == "none" or not arms:
        return [Facet("", tuple(arms))]
    groups = {"size": _by_size, "family": _by_family}.get(mode, lambda ms: [(m, [m]) for m in ms])(models)
    found = []
    for title, members in groups:
        order = {m: i for i, m in enumerate(members)}
        held = tuple(sorted((a for a in arms if arm_models[a] in order), key=lambda a: order[arm_models[a]]))
        if held:
            found.append(Facet(title, held))
    return found
