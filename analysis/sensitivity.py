"""One number for how sensitive a model is to its learning rate (docs/architecture.md, "Background").

Wortsman et al. (2023, "Small-scale proxies for large-scale Transformer training
instabilities", section 2.2) define LR sensitivity as the mean over the learning-rate sweep of
min(final loss, initial loss) minus the best final loss: a run that diverges counts at the loss
it started from. Here, on top-1 error, per study, optimizer, epochs and model (and any split
column): the mean over the model's usable trials of min(error, chance error) minus the model's
best error, in points of error. 0 means every trial reached the best error; the more of the
sampled box trains badly, the larger it is.

Chance error is what a diverged trial records (100 - 100 / classes): the smallest error any
diverged trial of the study recorded; a study where nothing diverged caps at 100 (every image
wrong). The 95% interval is a percentile bootstrap over the sampled points (all repeats of a
point drawn together), `scipy.stats.bootstrap` with the per-point sums paired.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from stability.analysis.stats import DIVERGED_ERROR, ERROR, iter_groups, usable_trials

SENSITIVITY_KEYS = ("study", "optimizer", "epochs", "model")


def chance_errors(trials: pd.DataFrame) -> dict[Any, float]:
    """Per study, the error a diverged trial records (the smallest such error), else DIVERGED_ERROR."""
    usable = usable_trials(trials)
    diverged = usable[usable["status"].astype(str) == "diverged"]
    found = diverged.groupby("study")[ERROR].min().to_dict() if len(diverged) else {}
    return {study: float(found.get(study, DIVERGED_ERROR)) for study in usable["study"].unique()}


def _statistic(sums, counts, mins, axis=-1):
    return sums.sum(axis=axis) / counts.sum(axis=axis) - mins.min(axis=axis)


def lr_sensitivity(errors: Sequence[float], points: Sequence[Any] | None = None, cap: float = DIVERGED_ERROR, *,
                   n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """{value, ci: [lo, hi] (None below two points), n (trials), n_points, cap} of one group's
    errors; `points` (the sampled point of each trial; None: every trial its own point) groups the
    repeats the bootstrap draws together."""
    e = np.asarray(errors, dtype=float)
    out: dict[str, Any] = {"value": None, "ci": None, "n": int(len(e)), "n_points": 0, "cap": float(cap)}
    if len(e) == 0:
        return out
    capped = np.minimum(e, cap)
    out["value"] = float(capped.mean() - e.min())
    keys = np.arange(len(e)) if points is None else pd.Series(list(points)).fillna(-1).to_numpy()
    _, which = np.unique(keys, return_inverse=True)
    which = which.ravel()
    n_points = int(which.max()) + 1
    out["n_points"] = n_points
    if n_points < 2:
        return out
    sums = np.bincount(which, weights=capped, minlength=n_points)
    counts = np.bincount(which, minlength=n_points).astype(float)
    mins = np.full(n_points, np.inf)
    np.minimum.at(mins, which, e)
    res = stats.bootstrap((sums, counts, mins), _statistic, paired=True, vectorized=True, n_resamples=n_boot,
                          method="percentile", confidence_level=level, rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    out["ci"] = [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else None
    return out


def lr_sensitivities(trials: pd.DataFrame, keys: Sequence[str] = SENSITIVITY_KEYS, *, n_boot: int = 1000,
                     seed: int = 0) -> list[dict[str, Any]]:
    """One row per group of `keys`: the key values and `lr_sensitivity`'s fields."""
    usable = usable_trials(trials)
    caps = chance_errors(trials)
    rows = []
    for key, g in iter_groups(usable, list(keys)):
        points = g["point"].to_numpy() if "point" in g else None
        cap = caps.get(key["study"], DIVERGED_ERROR) if "study" in key else DIVERGED_ERROR
        rows.append({**key, **lr_sensitivity(g[ERROR].to_numpy(float), points, cap, n_boot=n_boot, seed=seed)})
    return rows


def by_group(rows: Sequence[dict[str, Any]], keys: Sequence[str] = SENSITIVITY_KEYS) -> dict[tuple, dict[str, Any]]:
    """The rows of `lr_sensitivities` keyed by their key values, in `keys` order."""
    return {tuple(r.get(k) for k in keys): r for r in rows}


__all__ = ["SENSITIVITY_KEYS", "by_group", "chance_errors", "lr_sensitivities", "lr_sensitivity"]
