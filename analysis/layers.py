"""Over-smoothing by depth: patch cosine similarity after each transformer block.

The trials column `patch_cos_sim_layers` holds, per trial, the mean pairwise cosine similarity
of the patch tokens after each block (validation images); it is empty for models without patch
tokens and absent in older studies. Pyarrow hands the cells to pandas as numpy arrays, plain
lists come from frames built in memory: both are read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from stability.analysis.figures import Line, LinesData
from stability.analysis.stats import arm_fields, arm_label, group_keys, iter_groups, usable_trials

LAYERS = "patch_cos_sim_layers"
LAYER_STATS = ("n", "median", "q25", "q75", "mean")


def layer_values(cell: Any) -> np.ndarray:
    """One trial's per-block similarities as floats; empty for a missing cell (None, NaN)."""
    if cell is None or (np.ndim(cell) == 0 and pd.isna(cell)):
        return np.empty(0)
    return np.asarray(cell, dtype=float).ravel()


def _finished(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that ended normally (diverged and failed ones carry no meaningful similarity)."""
    if LAYERS not in trials:
        return trials.iloc[0:0]
    return trials[trials["status"].astype(str) == "ok"]


def layer_similarity_table(trials: pd.DataFrame, split_by: Sequence[str] = ()) -> pd.DataFrame:
    """One row per group (study, model, optimizer, epochs, splits) and block index (1..depth):
    n trials with a finite value there, their median, quartiles and mean. Empty when no finished
    trial recorded per-block values."""
    keys = group_keys(split_by)
    rows = []
    for key, g in iter_groups(_finished(trials), keys):
        per_trial = [v for v in map(layer_values, g[LAYERS]) if len(v)]
        depth = max((len(v) for v in per_trial), default=0)
        for layer in range(depth):  # models of another depth in the group just stop earlier
            at = np.array([v[layer] for v in per_trial if len(v) > layer])
            at = at[np.isfinite(at)]
            if len(at) == 0:
                continue
            q25, q50, q75 = np.percentile(at, [25, 50, 75])
            rows.append({**key, "layer": layer + 1, "n": len(at), "median": float(q50), "q25": float(q25),
                         "q75": float(q75), "mean": float(at.mean())})
    return pd.DataFrame(rows, columns=keys + ["layer", *LAYER_STATS])


def has_layer_similarity(trials: pd.DataFrame) -> bool:
    """True when some finished trial recorded a non-empty list of per-block values."""
    return any(len(layer_values(c)) for c in _finished(trials).get(LAYERS, ()))


def layer_similarity_data(trials: pd.DataFrame, epochs: int, *, split_by: Sequence[str] = ()) -> LinesData:
    """Median similarity per block (line) with its interquartile band, one line per arm (model,
    with its study and split values), one panel per optimizer, for one training budget."""
    table = layer_similarity_table(trials, split_by)
    table = table[table["epochs"] == epochs]
    fields = arm_fields(usable_trials(trials), split_by)
    optimizers = sorted(table["optimizer"].astype(str).unique())
    lines = []
    for key, g in iter_groups(table, ["optimizer"] + fields):
        arm = arm_label(key, fields)
        g = g.sort_values("layer")
        layer = g["layer"].to_numpy(float)
        text = [f"block {int(b)}: median {m:.3f}, IQR [{lo:.3f}, {hi:.3f}], mean {mu:.3f}, n={n}"
                for b, m, lo, hi, mu, n in zip(g["layer"], g["median"], g["q25"], g["q75"], g["mean"], g["n"])]
        lines.append(Line(arm, arm, layer, g["median"].to_numpy(float), layer,
                          g["q25"].to_numpy(float), g["q75"].to_numpy(float), text=text, panel=str(key["optimizer"])))
    where = f"{optimizers[0]}, " if len(optimizers) == 1 else ""
    return LinesData(f"Patch cosine similarity by block: {where}{epochs} epochs", "block",
                     "patch cosine similarity (median, IQR band)", lines)


def layer_budgets(trials: pd.DataFrame) -> list[int]:
    """Training budgets (epochs) with per-block similarities to draw."""
    return sorted(int(e) for e in layer_similarity_table(trials)["epochs"].unique())
