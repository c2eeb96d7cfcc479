"""Seed noise against hyper-parameter spread (docs/architecture.md, "Background").

With r repeats per sampled point (trials that share every knob and differ only in seed), the
within-point variance is seed noise and the variance of point means, less seed_var / r, is the
hyper-parameter part: a one-way random-effects ANOVA. A model difference smaller than the seed
noise is not a finding. Failed trials are left out; diverged trials count at their recorded
error (see `analysis.stats.usable_trials`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from stability.analysis.stats import ERROR, GROUP_KEYS, _plain, iter_groups, usable_trials
from stability.results.schema import OUTCOME_COLUMNS

POINT = "point"
NOT_KNOBS = frozenset({"seed", "trial_id", POINT, *OUTCOME_COLUMNS})


def point_columns(trials: pd.DataFrame) -> list[str]:
    """The columns that identify a sampled point when there is no `point` column: every column
    except seed, trial_id and the outcomes."""
    return [c for c in trials.columns if c not in NOT_KNOBS]


def _hashable(value: Any) -> Any:
    """A cell as a hashable, comparable value (lists as tuples, missing as None)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    return _plain(value)


def point_ids(trials: pd.DataFrame) -> np.ndarray:
    """An integer id per trial, equal for trials of the same sampled point: the `point` column
    when present, else the values of `point_columns`."""
    if POINT in trials:
        keys = [_hashable(v) for v in trials[POINT]]
    else:
        cols = point_columns(trials)
        keys = [tuple(_hashable(v) for v in row) for row in trials[cols].itertuples(index=False, name=None)]
    ids: dict[Any, int] = {}
    return np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=int)


def variance_split(errors: np.ndarray, points: np.ndarray) -> dict[str, Any] | None:
    """Seed and hyper-parameter standard deviations of one group's errors, from the points with
    two or more runs; None when no point has two. `repeats` is the runs per point (their
    harmonic mean when points differ, which makes seed_var * mean(1/r_i) the seed part of the
    variance of point means)."""
    frame = pd.DataFrame({"e": errors, "p": points})
    per_point = frame.groupby("p")["e"].agg(["count", "mean", lambda x: x.var(ddof=1)])
    per_point.columns = ["count", "mean", "var"]
    per_point = per_point[per_point["count"] >= 2]
    if per_point.empty:
        return None
    counts = per_point["count"].to_numpy(int)
    seed_var = float(per_point["var"].mean())
    inv_r = float(np.mean(1.0 / counts))
    repeats: float | int = int(counts[0]) if np.all(counts == counts[0]) else float(1.0 / inv_r)
    out: dict[str, Any] = {"repeats": repeats, "points": len(per_point), "seed_sd": math.sqrt(seed_var)}
    if len(per_point) < 2:
        out.update(hparam_sd=None, seed_share=None)
        return out
    hparam_var = max(0.0, float(per_point["mean"].var(ddof=1)) - seed_var * inv_r)
    total = seed_var + hparam_var
    out.update(hparam_sd=math.sqrt(hparam_var), seed_share=seed_var / total if total > 0 else None)
    return out


def seed_variance(trials: pd.DataFrame) -> list[dict[str, Any]]:
    """Per (study, model, optimizer, epochs) group whose points were run with two or more seeds:
    {study, model, optimizer, epochs, repeats, points, seed_sd, hparam_sd, seed_share}.

    seed_sd = sqrt(mean over points of the within-point variance, ddof=1); hparam_sd =
    sqrt(max(0, var(point means, ddof=1) - seed_sd^2 / r)); seed_share = seed_sd^2 /
    (seed_sd^2 + hparam_sd^2), None when both are 0. Only points with two or more usable runs
    count; hparam_sd and seed_share are None when fewer than two such points remain. Groups
    without repeated points are left out."""
    usable = usable_trials(trials)
    if usable.empty:
        return []
    usable = usable.assign(_point=point_ids(usable))
    rows = []
    for key, g in iter_groups(usable, GROUP_KEYS):
        split = variance_split(g[ERROR].to_numpy(float), g["_point"].to_numpy(int))
        if split is not None:
            rows.append({**key, **split})
    return rows
