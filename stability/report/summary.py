"""The `--json` summary as plain data: group statistics, KS tests, per-block similarity, factors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd


def json_value(x: Any) -> Any:
    """Plain JSON data: numpy scalars as Python numbers, NaN, inf and pd.NA as None, keys as text.
    (pandas' own `to_json` would round floats to 10 digits.)"""
    if isinstance(x, dict):
        return {str(k): json_value(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_value(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is pd.NA:
        return None
    return x


def summary(trials: pd.DataFrame, split_by: Sequence[str], params: Sequence[str], seed: int = 0,
            factors: Sequence[str] = ()) -> dict[str, Any]:
    """The summary as plain data: `groups`, `ks` (model pairs), `ks_optimizers`,
    `patch_cos_sim_by_layer` (per group and block: n, median, q25, q75, mean; empty when the
    study recorded none) and `factors` (per factor column: its levels and the groups split by it)."""
    from analysis import factor_levels, group_stats, ks_models, ks_optimizers, layer_similarity_table

    split_by, params = list(split_by), list(params)
    return json_value({
        "groups": group_stats(trials, split_by, params, seed=seed).to_dict(orient="records"),
        "ks": ks_models(trials, split_by).to_dict(orient="records"),
        "ks_optimizers": ks_optimizers(trials, split_by).to_dict(orient="records"),
        "patch_cos_sim_by_layer": layer_similarity_table(trials, split_by).to_dict(orient="records"),
        "factors": [{"column": f, "levels": factor_levels(trials, f),
                     "groups": group_stats(trials, [*split_by, f], params, seed=seed).to_dict(orient="records")}
                    for f in factors],
    })
