"""Stability statistics of a results table (docs/architecture.md, "Background").

Every function takes pandas frames (schema v1 trials) or numpy arrays and returns plain data.
Failed trials are left out of every statistic but counted (`n_failed`); diverged trials are kept
at their recorded error (chance level or worse), so they weigh on every number as they should.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import gammaln

GROUP_KEYS = ("study", "model", "optimizer", "epochs")
ERROR = "top1_err"
DIVERGED_ERROR = 100.0  # a diverged trial that recorded no error counts as wrong on every image
NEAR_OPT_DELTAS = (1.0, 2.0)
CI_STATS = ("median", "mean", "q25", "q75", "near_opt_1", "near_opt_2")
_EPS = 1e-9  # float slack when comparing errors to best + delta


def group_keys(split_by: Iterable[str] = ()) -> list[str]:
    """Columns that define a group: study, model, optimizer, epochs, then the user's splits."""
    keys = list(GROUP_KEYS)
    keys += [c for c in split_by if c not in keys]
    return keys


def _filled_errors(trials: pd.DataFrame) -> np.ndarray:
    err = pd.to_numeric(trials[ERROR], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return np.where((trials["status"].astype(str).to_numpy() == "diverged") & ~np.isfinite(err), DIVERGED_ERROR, err)


def usable_mask(trials: pd.DataFrame) -> np.ndarray:
    """True for the trials statistics are computed on: not failed, with a finite error (a
    diverged trial without a recorded error counts at DIVERGED_ERROR; any other trial without
    one is treated like a failed one)."""
    return (trials["status"].astype(str).to_numpy() != "failed") & np.isfinite(_filled_errors(trials))


def usable_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The usable trials (see usable_mask), `top1_err` as float with diverged gaps filled."""
    df = trials.assign(**{ERROR: _filled_errors(trials)})
    return df[usable_mask(trials)].reset_index(drop=True)


def iter_groups(trials: pd.DataFrame, keys: Sequence[str]) -> Iterable[tuple[dict[str, Any], pd.DataFrame]]:
    """(key values, rows) for each group, in sorted key order."""
    if trials.empty:
        return
    for values, rows in trials.groupby(list(keys), sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        yield {k: _plain(v) for k, v in zip(keys, values)}, rows


def _plain(value: Any) -> Any:
    """A numpy/pandas scalar as a plain Python value (None for missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value.item() if isinstance(value, np.generic) else value


# --- expected best of k trials ---------------------------------------------------------------

def default_ks(n: int) -> list[int]:
    """1, 2, 4, 8, ... below n, then n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n] if n >= 1 else []


def expected_best_weights(n: int, k: int) -> np.ndarray:
    """Probability that the i-th smallest of n values is the minimum of k drawn without
    replacement: C(n-i, k-1) / C(n, k) for i = 1..n (Tang et al. 2020), in log space."""
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    i = np.arange(1, n + 1)
    top = n - i
    valid = top >= k - 1
    log_c = np.full(n, -np.inf)
    t = top[valid]
    log_c[valid] = gammaln(t + 1) - gammaln(k) - gammaln(t - k + 2)
    log_total = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
    return np.exp(log_c - log_total)


def expected_best(errors: Sequence[float], ks: Iterable[int] | None = None) -> dict[int, float]:
    """Expected minimum error of k trials drawn without replacement from `errors`, per k
    (default: default_ks(n))."""
    e = np.sort(np.asarray(errors, dtype=float))
    n = len(e)
    if n == 0:
        return {}
    return {int(k): float(e @ expected_best_weights(n, int(k))) for k in (default_ks(n) if ks is None else ks)}


def expected_best_curve(errors: Sequence[float], n_boot: int = 200, seed: int = 0, level: float = 0.95):
    """(k = 1..n, expected best, lower, upper): the curve with a bootstrap band."""
    ks = np.arange(1, len(errors) + 1)
    mean, lo, hi = expected_best_interval(errors, ks, n_boot, seed, level)
    return ks, mean, lo, hi


def expected_best_interval(errors: Sequence[float], ks: Sequence[int], n_boot: int, seed: int, level: float = 0.95):
    """(expected best, lower, upper) for each k of `ks`, the bounds a percentile bootstrap over the runs."""
    e = np.asarray(errors, dtype=float)
    n = len(e)
    weights = np.stack([expected_best_weights(n, int(k)) for k in ks], axis=1) if len(ks) else np.zeros((n, 0))

    def statistic(x, axis=-1):
        return np.moveaxis(np.sort(np.moveaxis(x, axis, -1), axis=-1) @ weights, -1, 0)

    lo, hi = bootstrap_interval(e, statistic, n_boot, seed, level, size=len(ks))
    return np.sort(e) @ weights, lo, hi


# --- near-optimal mass, intervals -------------------------------------------------------------

def near_optimal_mass(errors: Sequence[float], delta: float) -> float:
    """Share of the runs within `delta` points of the best run: F(e_min + delta)."""
    e = np.asarray(errors, dtype=float)
    return float(np.mean(e <= e.min() + delta + _EPS)) if len(e) else math.nan


def bootstrap_interval(values, statistic, n_resamples: int, seed: int, level: float = 0.95, size: int = 1):
    """Percentile bootstrap interval of a (vectorised, possibly vector-valued) statistic;
    NaNs when there are fewer than two values."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        nan = np.full(size, np.nan)
        return nan, nan.copy()
    res = stats.bootstrap((values,), statistic, n_resamples=n_resamples, method="percentile", vectorized=True,
                          confidence_level=level, rng=np.random.default_rng(seed))
    return np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)


def _ci_statistic(x, axis=-1):
    """The estimated statistics of CI_STATS, stacked on the first axis."""
    best = x.min(axis=axis, keepdims=True)
    q25, q50, q75 = np.percentile(x, [25, 50, 75], axis=axis)
    near = [np.mean(x <= best + d + _EPS, axis=axis) for d in NEAR_OPT_DELTAS]
    return np.stack([q50, x.mean(axis=axis), q25, q75, *near])


def error_stats(errors: Sequence[float], statuses: Sequence[str] | None = None, *, n_boot: int = 1000,
                seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Statistics of one group's errors (failed trials already left out)."""
    e = np.asarray(errors, dtype=float)
    n = len(e)
    out: dict[str, Any] = {"n": n, "n_diverged": int(np.sum(np.asarray(statuses) == "diverged")) if statuses is not None else 0}
    if n == 0:
        out.update({k: None for k in ("min", "median", "mean", "q25", "q75", "near_opt_1", "near_opt_2", "diverged_rate")})
        out.update(expected_best={}, ci={}, expected_best_ci={})
        return out
    q25, q50, q75 = np.percentile(e, [25, 50, 75])
    out.update({"min": float(e.min()), "median": float(q50), "mean": float(e.mean()), "q25": float(q25),
                "q75": float(q75), "near_opt_1": near_optimal_mass(e, 1.0), "near_opt_2": near_optimal_mass(e, 2.0)})
    out["diverged_rate"] = out["n_diverged"] / n
    out["expected_best"] = expected_best(e)
    lo, hi = bootstrap_interval(e, _ci_statistic, n_boot, seed, level, size=len(CI_STATS))
    out["ci"] = {name: [_finite(a), _finite(b)] for name, a, b in zip(CI_STATS, lo, hi)}
    ks = list(out["expected_best"])
    _, lo, hi = expected_best_interval(e, ks, n_boot, seed, level)
    out["expected_best_ci"] = {k: [_finite(a), _finite(b)] for k, a, b in zip(ks, lo, hi)}
    return out


def _finite(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


# --- good ranges (pycls) ----------------------------------------------------------------------

def good_range(errors: Sequence[float], values: Sequence[float], *, n_resamples: int = 2500, frac: float = 0.25,
               seed: int = 0, percentiles=(2.5, 50.0, 97.5)) -> tuple[float, float, float]:
    """pycls good-range bootstrap of one hyper-parameter: draw `frac` of the runs (at least 1)
    with replacement, keep the best run of each draw, return percentiles of its value.
    Positive values are interpolated geometrically (learning rates live on a log scale)."""
    e = np.asarray(errors, dtype=float)
    v = np.asarray(values, dtype=float)
    keep = np.isfinite(e) & np.isfinite(v)
    e, v = e[keep], v[keep]
    if len(e) == 0:
        return (math.nan, math.nan, math.nan)
    m = max(1, int(len(e) * frac))
    draws = np.random.default_rng(seed).integers(0, len(e), size=(n_resamples, m))
    best = draws[np.arange(n_resamples), np.argmin(e[draws], axis=1)]
    chosen = v[best]
    if np.all(chosen > 0):
        found = np.exp(np.percentile(np.log(chosen), percentiles))
    else:
        found = np.percentile(chosen, percentiles)
    return tuple(float(x) for x in np.clip(found, chosen.min(), chosen.max()))  # no exp/log rounding past the data


def good_ranges(rows: pd.DataFrame, params: Iterable[str], **kwargs) -> dict[str, dict[str, float]]:
    """good_range of each numeric column of `params` present in `rows`: {param: {lo, median, hi}}."""
    out = {}
    for p in params:
        if p not in rows or not pd.api.types.is_numeric_dtype(rows[p]) or pd.api.types.is_bool_dtype(rows[p]):
            continue
        lo, mid, hi = good_range(rows[ERROR].to_numpy(float), rows[p].to_numpy(float), **kwargs)
        out[p] = {"lo": _finite(lo), "median": _finite(mid), "hi": _finite(hi)}
    return out


# --- per-group table --------------------------------------------------------------------------

def group_stats(trials: pd.DataFrame, split_by: Iterable[str] = (), params: Iterable[str] = ("lr", "weight_decay"),
                *, n_boot: int = 1000, n_range_boot: int = 2500, seed: int = 0) -> pd.DataFrame:
    """One row per group with n, n_diverged, n_failed, min, median, mean, q25, q75,
    near_opt_1/2, diverged_rate, `expected_best` ({k: value}) with `expected_best_ci`
    ({k: [lo, hi]}), `ci` ({stat: [lo, hi]}) and `good_range` ({param: {lo, median, hi}}).
    Intervals are 95% percentile bootstraps (NaN/None below two trials)."""
    keys = group_keys(split_by)
    usable = usable_trials(trials)
    failed = trials[~usable_mask(trials)]
    failed_counts = {tuple(k.values()): len(r) for k, r in iter_groups(failed, keys)}
    rows = []
    params = list(params)
    for key, g in iter_groups(usable, keys):
        row = dict(key)
        row.update(error_stats(g[ERROR].to_numpy(float), g["status"].to_numpy(str), n_boot=n_boot, seed=seed))
        row["n_failed"] = failed_counts.pop(tuple(key.values()), 0)
        row["good_range"] = good_ranges(g, params, n_resamples=n_range_boot, seed=seed)
        rows.append(row)
    for values, count in failed_counts.items():  # groups in which every trial failed
        row = dict(zip(keys, values))
        row.update(error_stats([], []))
        row.update(n_failed=count, good_range={})
        rows.append(row)
    columns = keys + ["n", "n_diverged", "n_failed", "min", "median", "mean", "q25", "q75", "near_opt_1",
                      "near_opt_2", "diverged_rate", "expected_best", "expected_best_ci", "ci", "good_range"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True) if rows else frame


# --- Kolmogorov-Smirnov comparisons -----------------------------------------------------------

def arm_label(key: dict[str, Any], fields: Sequence[str]) -> str:
    """A readable name of a compared arm: its key values joined, e.g. `vit_c_tiny` or
    `study_a / vit_c_tiny / mixup=0.8`."""
    parts = []
    for f in fields:
        v = key.get(f)
        parts.append(str(v) if f in GROUP_KEYS else f"{f}={v}")
    return " / ".join(parts)


def arm_fields(trials: pd.DataFrame, split_by: Iterable[str] = ()) -> list[str]:
    """Fields naming a model arm: the study only when several are present, the model, the splits."""
    fields = ["study"] if "study" in trials and trials["study"].nunique(dropna=False) > 1 else []
    return fields + ["model"] + [c for c in split_by if c not in GROUP_KEYS]


def _pairs(usable: pd.DataFrame, within: list[str], compared: list[str], label_fields: list[str]) -> list[dict[str, Any]]:
    out = []
    for key, g in iter_groups(usable, within):
        arms = [(arm_label(k, label_fields), r[ERROR].to_numpy(float)) for k, r in iter_groups(g, compared)]
        for (a, ea), (b, eb) in combinations(arms, 2):
            res = stats.ks_2samp(ea, eb)
            out.append({**key, "a": a, "b": b, "D": float(res.statistic), "p": float(res.pvalue),
                        "n_a": len(ea), "n_b": len(eb)})
    return out


def ks_models(trials: pd.DataFrame, split_by: Iterable[str] = ()) -> pd.DataFrame:
    """KS statistic D and p-value between every pair of model arms, per optimizer and epochs."""
    usable = usable_trials(trials)
    fields = arm_fields(usable, split_by)
    rows = _pairs(usable, ["optimizer", "epochs"], fields, fields)
    return pd.DataFrame(rows, columns=["optimizer", "epochs", "a", "b", "D", "p", "n_a", "n_b"])


def ks_optimizers(trials: pd.DataFrame, split_by: Iterable[str] = ()) -> pd.DataFrame:
    """KS statistic D and p-value between every pair of optimizers, per model arm and epochs."""
    usable = usable_trials(trials)
    fields = arm_fields(usable, split_by)
    within = (["study"] if "study" not in fields else []) + fields + ["epochs"]
    rows = _pairs(usable, within, ["optimizer"], ["optimizer"])
    frame = pd.DataFrame(rows, columns=within + ["a", "b", "D", "p", "n_a", "n_b"])
    frame.insert(0, "arm", [arm_label(r, fields) for r in rows] if rows else [])
    return frame
