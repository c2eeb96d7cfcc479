"""Which trials columns the report plots and splits by: sampled parameters, factors, --split-by."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from stability.cli import UsageError
from stability.results.schema import BASE_COLUMNS, OUTCOME_COLUMNS, REQUIRED_COLUMNS


def sampled_params(trials: pd.DataFrame, records: Sequence[dict[str, Any]]) -> list[str]:
    """The numeric knobs any folder samples from a range (lr and weight_decay first), without repeats;
    from each folder's sampled-knob records (study.yaml `knobs`)."""
    from stability.analysis import sampled_columns

    params = []
    for rec in records:
        params += [p for p in sampled_columns(trials, rec["knobs"]) if p not in params]
    return params


def factors(trials: pd.DataFrame, split_by: Sequence[str], params: Sequence[str]) -> list[str]:
    """Knob columns with a few values that get their own EDF sections (not those already split by
    or sampled)."""
    from stability.analysis import factor_columns

    return factor_columns(trials, BASE_COLUMNS, exclude=[*split_by, *params])


def check_split_by(trials: pd.DataFrame, split_by: Sequence[str]) -> None:
    """UsageError naming the columns that can be used when --split-by names another one."""
    from stability.analysis import split_choices

    choices = split_choices(trials, REQUIRED_COLUMNS + OUTCOME_COLUMNS)
    for col in split_by:
        if col not in choices:
            why = "not a knob column (a key or an outcome)" if col in trials else "no such trials column"
            raise UsageError(f"--split-by {col}: {why}; choose from: {', '.join(choices) or '(none)'}")
