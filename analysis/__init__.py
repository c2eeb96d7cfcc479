"""Analysis of stability studies: statistics, EDFs and figures from results frames.

Pure functions on pandas frames (schema v1, stability/results/schema.py); no torch, no ray. The data of each
figure comes from its own function (`analysis.figures`, `analysis.layers`) and is rendered by
`analysis.plots`; `analysis.factors` finds the knob columns to split EDFs by. The plotting
names load `analysis.plots` (and plotly) on first use, so the statistics import no plotly.
"""

from __future__ import annotations

import importlib
from typing import Any

from stability.analysis.bands import edf_bands, tuning_curves
from stability.analysis.verdict_matrix import verdict_keys, verdict_matrix_data
from stability.analysis.edf import delta_to_best, edf, edf_at, edf_band, edf_grid, normalized_weights
from stability.analysis.figures import (
    arm_names,
    edf_data,
    epoch_budgets,
    epochs_data,
    expected_best_data,
    hparam_data,
    learning_curves_data,
    optimizer_data,
    sampled_columns,
    slices,
    tuning_curve_data,
)
from stability.analysis.factors import factor_columns, factor_levels, split_choices
from stability.analysis.layers import LAYERS, has_layer_similarity, layer_budgets, layer_similarity_data, layer_similarity_table
from stability.analysis.stats import (
    GROUP_KEYS,
    default_ks,
    error_stats,
    expected_best,
    expected_best_curve,
    expected_best_weights,
    good_range,
    good_ranges,
    group_keys,
    group_stats,
    ks_models,
    ks_optimizers,
    near_optimal_mass,
    usable_mask,
    usable_trials,
)

_PLOTS = ("colour_map", "plot_edf", "plot_hparams", "plot_layer_similarity", "plot_learning_curves", "plot_lines",
          "plot_optimizers", "plot_verdict_matrix")


def __getattr__(name: str) -> Any:
    if name not in _PLOTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("stability.analysis.plots"), name)


__all__ = [
    "GROUP_KEYS", "LAYERS", "arm_names", "colour_map", "default_ks", "delta_to_best", "edf", "edf_at", "edf_band",
    "edf_data", "edf_grid", "epoch_budgets", "epochs_data", "error_stats", "expected_best", "expected_best_curve",
    "expected_best_data", "expected_best_weights", "factor_columns", "factor_levels", "good_range", "good_ranges",
    "group_keys", "group_stats", "has_layer_similarity", "hparam_data", "ks_models", "ks_optimizers",
    "layer_budgets", "layer_similarity_data", "layer_similarity_table", "learning_curves_data",
    "near_optimal_mass", "normalized_weights", "optimizer_data", "plot_edf", "plot_hparams",
    "plot_layer_similarity", "plot_learning_curves", "plot_lines", "plot_optimizers", "sampled_columns", "slices",
    "split_choices", "tuning_curve_data", "tuning_curves", "usable_mask", "usable_trials", "edf_bands",
    "plot_verdict_matrix", "verdict_keys", "verdict_matrix_data",
]
