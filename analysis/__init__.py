"""Analysis of stability studies: statistics, EDFs and figures from results frames.

Pure functions on pandas frames (schema v1, DESIGN.md); no torch, no ray. The data of each
figure comes from its own function in `analysis.figures` and is rendered by `analysis.plots`.
"""

from analysis.edf import delta_to_best, edf, edf_at, edf_band, edf_grid, normalized_weights
from analysis.figures import (
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
)
from analysis.plots import colour_map, plot_edf, plot_hparams, plot_learning_curves, plot_lines, plot_optimizers
from analysis.stats import (
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

__all__ = [
    "GROUP_KEYS", "arm_names", "colour_map", "default_ks", "delta_to_best", "edf", "edf_at", "edf_band",
    "edf_data", "edf_grid", "epoch_budgets", "epochs_data", "error_stats", "expected_best",
    "expected_best_curve", "expected_best_data", "expected_best_weights", "good_range", "good_ranges",
    "group_keys", "group_stats", "hparam_data", "ks_models", "ks_optimizers", "learning_curves_data",
    "near_optimal_mass", "normalized_weights", "optimizer_data", "plot_edf", "plot_hparams",
    "plot_learning_curves", "plot_lines", "plot_optimizers", "sampled_columns", "slices", "usable_mask",
    "usable_trials",
]
