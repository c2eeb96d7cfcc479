"""Edge of the search box (Tuning Playbook, "basic hyper-parameter axis
plots"): when a group's best trial sits at the edge of a sampled range, the box, not the model,
may decide the result, and a wider box could change the ranking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from stability.analysis.stats import ERROR, GROUP_KEYS, iter_groups, usable_trials

EDGE_SHARE = 0.1  # outer share of a range, at either end, that counts as its edge
NUMERIC_KINDS = ("log_uniform", "uniform", "int_uniform")
_SLACK = 1e-9  # float slack: a value exactly `share` into the range counts as at the edge


def knobs_for(knobs: Sequence[dict[str, Any]], model: Any, optimizer: Any) -> list[dict[str, Any]]:
    """The knob records of one model and optimizer (a record without a model or an optimizer
    applies to all)."""
    return [k for k in knobs if k.get("model") in (None, model) and k.get("optimizer") in (None, optimizer)]


def range_position(value: float, low: float, high: float, log: bool) -> float | None:
    """Where `value` lies in [low, high], 0 at low and 1 at high (in log space when `log`);
    None for a missing value or an empty range."""
    if value is None or not math.isfinite(value) or not high > low:
        return None
    if log:
        if low <= 0 or value <= 0:
            return None
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


def edge_of(value: float, knob: dict[str, Any], share: float = EDGE_SHARE) -> str | None:
    """"low" or "high" when `value` lies in the outer `share` of the knob's range, else None;
    None for choices and malformed records."""
    if knob.get("kind") not in NUMERIC_KINDS:
        return None
    try:
        low, high = (float(v) for v in knob["values"][:2])
    except (KeyError, TypeError, ValueError):
        return None
    t = range_position(value, low, high, knob["kind"] == "log_uniform")
    if t is None:
        return None
    return "low" if t <= share + _SLACK else "high" if t >= 1 - share - _SLACK else None


def edge_warnings(trials: pd.DataFrame, knobs: Sequence[dict[str, Any]],
                  share: float = EDGE_SHARE) -> list[dict[str, Any]]:
    """One {study, model, optimizer, epochs, knob, edge, value, range} per group and sampled
    numeric knob of its model and optimizer where the group's best trial (lowest top1_err among
    usable trials, the first on ties) lies in the outer `share` of the knob's range ("low" or
    "high"; log space for log_uniform). `knobs` are study.yaml's knob records (column,
    optimizer, model, kind, values); choices are skipped, as are knobs whose column is absent."""
    usable = usable_trials(trials)
    out = []
    for key, g in iter_groups(usable, GROUP_KEYS):
        best = g.loc[g[ERROR].idxmin()]
        seen = set()
        for knob in knobs_for(knobs, key["model"], key["optimizer"]):
            column = knob.get("column")
            if column not in g or column in seen:
                continue
            value = pd.to_numeric(pd.Series([best[column]]), errors="coerce").iloc[0]
            edge = edge_of(float(value), knob, share) if pd.notna(value) else None
            if edge is not None:
                seen.add(column)
                out.append({**key, "knob": column, "edge": edge, "value": float(value),
                            "range": [float(v) for v in knob["values"][:2]]})
    return out

