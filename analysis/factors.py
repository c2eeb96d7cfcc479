"""Factors of a study: knob columns the report can split EDFs by.

Any knob under `train` or `model_args` may be sampled; its result column is the leaf key
(dotted for nested ones, e.g. `distillation.type`, `patch_losses.cosine`). A factor is such a
column that takes a few distinct values (numbers, strings or missing) within a study and varies
between trials of the same model, optimizer and budget, so splitting by it compares like with
like. The caller names the base (non-knob) columns: this package does not import `stability`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from stability.analysis.stats import GROUP_KEYS, _plain, usable_trials

MAX_LEVELS = 8


def is_scalar_column(values: pd.Series) -> bool:
    """True when no cell holds a list, array or map (such columns cannot split groups)."""
    return not any(isinstance(v, (list, tuple, dict, set, np.ndarray)) for v in values)


def split_choices(trials: pd.DataFrame, exclude: Iterable[str] = ()) -> list[str]:
    """Columns `--split-by` may name: scalar-valued ones not in `exclude`, sorted."""
    skip = set(exclude)
    return sorted(c for c in trials.columns if c not in skip and is_scalar_column(trials[c]))


def _n_levels(values: pd.Series) -> int:
    return int(values.nunique(dropna=False))


def factor_columns(trials: pd.DataFrame, base_columns: Iterable[str], *, exclude: Iterable[str] = (),
                   max_levels: int = MAX_LEVELS) -> list[str]:
    """Knob columns (not base, not excluded, scalar) that, among usable trials of some study,
    take 2..max_levels distinct values (missing counts as one) and vary within at least one
    (study, model, optimizer, epochs) group. Sorted by name."""
    usable = usable_trials(trials)
    skip = set(base_columns) | set(exclude)
    found = []
    for col in split_choices(usable, skip):
        for _, study in usable.groupby("study", sort=False):
            if not 2 <= _n_levels(study[col]) <= max_levels:
                continue
            if study.groupby(list(GROUP_KEYS[1:]), sort=False, dropna=False)[col].agg(_n_levels).max() > 1:
                found.append(col)
                break
    return sorted(found)


def factor_levels(trials: pd.DataFrame, column: str) -> list[Any]:
    """The distinct values of a factor among usable trials, sorted: numbers, text, missing."""
    values = [_plain(v) for v in usable_trials(trials)[column].drop_duplicates()]
    numbers = sorted(v for v in values if v is not None and not isinstance(v, str))
    texts = sorted(v for v in values if isinstance(v, str))  # a knob typed differently by two studies
    return numbers + texts + ([None] if None in values else [])
