"""The `--json` summary as plain data: group statistics, KS tests, per-block similarity, factors."""

from __future__ import annotations

import datetime
import decimal
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from stability.analysis.best_of_k import UNBIASED, expected_best_with_replacement


def json_value(x: Any) -> Any:
    """Plain JSON data: numpy scalars as Python numbers, NaN, inf, pd.NA and NaT as None, keys as
    text, bytes as hex text, timestamps and dates as ISO 8601 text (durations as ISO 8601 durations),
    arrays and sets as lists, anything else as its text. (pandas' own `to_json` would round floats
    to 10 digits.)"""
    if isinstance(x, dict):
        return {_json_key(k): json_value(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset, np.ndarray)):
        return [json_value(v) for v in (sorted(x, key=str) if isinstance(x, (set, frozenset)) else x)]
    if x is None or x is pd.NA or x is pd.NaT:
        return None
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x).hex()
    if isinstance(x, (np.datetime64, np.timedelta64)):
        x = pd.Timestamp(x) if isinstance(x, np.datetime64) else pd.Timedelta(x)
        return None if x is pd.NaT else x.isoformat()
    if isinstance(x, (datetime.datetime, datetime.date, datetime.time)):  # pd.Timestamp is a datetime
        return x.isoformat()
    if isinstance(x, datetime.timedelta):  # pd.Timedelta is a timedelta
        return pd.Timedelta(x).isoformat()
    if hasattr(x, "item") and not isinstance(x, str):
        x = x.item()
        if isinstance(x, (bytes, datetime.date, datetime.time, datetime.timedelta)):
            return json_value(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, decimal.Decimal):
        return json_value(float(x))
    if isinstance(x, (str, bool, int, float)):
        return x
    return str(x)


def _json_key(key: Any) -> str:
    value = json_value(key)
    return value if isinstance(value, str) else str(key)


def _low_variance(trials: pd.DataFrame, groups: list[dict[str, Any]], split_by: Sequence[str]) -> list[dict[str, Any]]:
    """Each group with `expected_best_low_variance` ({k: value}) at the k of its `expected_best`."""
    from stability.analysis.stats import ERROR, group_keys, iter_groups, usable_trials

    keys = group_keys(split_by)
    errors = {tuple(json_value(v) for v in k.values()): g[ERROR].to_numpy(float)
              for k, g in iter_groups(usable_trials(trials), keys)}
    for g in groups:
        e = errors.get(tuple(json_value(g.get(k)) for k in keys))
        ks = [int(k) for k in (g.get("expected_best") or {})]
        g["expected_best_low_variance"] = expected_best_with_replacement(e, ks) if e is not None and ks else {}
    return groups


def _with_sensitivity(trials: pd.DataFrame, groups: list[dict[str, Any]], split_by: Sequence[str],
                      seed: int) -> list[dict[str, Any]]:
    """Each group with `lr_sensitivity` ({value, ci, n}, `analysis.sensitivity`) over its own trials."""
    from stability.analysis.sensitivity import by_group, lr_sensitivities
    from stability.analysis.stats import group_keys

    keys = group_keys(split_by)
    found = by_group(json_value(lr_sensitivities(trials, keys, seed=seed)), keys)
    for g in groups:
        row = found.get(tuple(json_value(g.get(k)) for k in keys)) or {}
        g["lr_sensitivity"] = {k: row.get(k) for k in ("value", "ci", "n")}
    return groups


def summary(trials: pd.DataFrame, split_by: Sequence[str], params: Sequence[str], seed: int = 0,
            factors: Sequence[str] = (), knobs: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The summary as plain data: `groups`, `ks` (model pairs), `ks_optimizers`,
    `patch_cos_sim_by_layer` (per group and block: n, median, q25, q75, mean; empty when the
    study recorded none), `factors` (per factor column: its levels and the groups split by it) and
    `verdicts` (per pair of models, optimizer and epochs: the paired comparison, `analysis.verdicts`),
    `variance` (seed noise against the hyper-parameters' spread, groups with repeats), `frontier`
    (the largest stable lr), `edge_warnings` (best trials at the edge of a sampled range; `knobs`:
    study.yaml's knob records) and `importance` (which knob the error depends on, Optuna PED-ANOVA).
    `expected_best_estimator` names the estimator of the groups' `expected_best` (and of the
    report's curves): "unbiased"; each group also has `expected_best_low_variance`, the
    lower-variance estimator of Dodge et al. 2021 at the same k. `lr_sensitivity` (per study,
    optimizer, epochs and model; each group has its own too): one number for how sensitive the
    model is to its learning rate, with its interval (`analysis.sensitivity`). `edf_bands` and
    `tuning_curves` (per study, optimizer, epochs and model): the exact simultaneous 95% bands of
    the error EDF and of the median best error after k trials (`analysis.bands`)."""
    from stability.analysis.edges import edge_warnings
    from stability.analysis.frontier import stability_frontier
    from stability.analysis.importance import importance
    from stability.analysis.noise import seed_variance
    from stability.analysis import factor_levels, group_stats, ks_models, ks_optimizers, layer_similarity_table
    from stability.analysis.bands import edf_bands, tuning_curves
    from stability.analysis.sensitivity import lr_sensitivities
    from stability.analysis.verdicts import verdicts

    split_by, params = list(split_by), list(params)
    sensitivity = lr_sensitivities(trials, seed=seed)

    def groups(by: list[str]) -> list[dict[str, Any]]:
        found = group_stats(trials, by, params, seed=seed).to_dict(orient="records")
        return _with_sensitivity(trials, _low_variance(trials, found, by), by, seed)

    return json_value({
        "groups": groups(split_by),
        "expected_best_estimator": UNBIASED,
        "ks": ks_models(trials, split_by).to_dict(orient="records"),
        "ks_optimizers": ks_optimizers(trials, split_by).to_dict(orient="records"),
        "patch_cos_sim_by_layer": layer_similarity_table(trials, split_by).to_dict(orient="records"),
        "factors": [{"column": f, "levels": factor_levels(trials, f),
                     "groups": groups([*split_by, f])} for f in factors],
        "verdicts": verdicts(trials, sensitivity),
        "lr_sensitivity": sensitivity,
        "edf_bands": edf_bands(trials, seed=seed),
        "tuning_curves": tuning_curves(trials, seed=seed),
        "variance": seed_variance(trials),
        "frontier": stability_frontier(trials, seed=seed),
        "edge_warnings": edge_warnings(trials, list(knobs)),
        "importance": importance(trials, list(knobs), seed=seed),
    })
