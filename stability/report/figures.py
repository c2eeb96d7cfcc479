"""Every figure of the report, one entry each in FIGURES: its name, the section that draws it, the
`analysis` function computing its data and the `analysis.plots` function rendering that data.

A new figure is one more entry here (with its data and plot functions in `analysis`); each
section draws its entries in this order, once per key the section gives (e.g. per training budget).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

import analysis as an
from analysis.stats import ERROR
from stability.report.page import Figure

# the sections that draw figures (see stability.report.sections), and the keys of each figure there
SLICE = "slice"  # one section per (optimizer, epochs): key {optimizer, epochs}
FACTOR = "factor"  # one section per factor column: key {column, optimizer, epochs} per slice
OPTIMIZERS = "optimizers"  # key {epochs} per training budget
EPOCHS = "epochs"  # one figure: key {}
LAYERS = "layers"  # key {epochs} per budget with per-block similarities


@dataclass(frozen=True)
class Arms:
    """What a section's figures are drawn from: the frames, the columns splitting models into arms,
    the bootstrap seed and one colour per arm (the same in every figure of the section)."""

    trials: pd.DataFrame
    curves: pd.DataFrame
    split_by: tuple[str, ...]
    seed: int
    colours: dict[str, str]


def arms(trials: pd.DataFrame, curves: pd.DataFrame, split_by: Sequence[str], seed: int) -> Arms:
    """The arms of the study split by `split_by`, coloured in a stable order."""
    return Arms(trials, curves, tuple(split_by), seed, an.colour_map(an.arm_names(trials, split_by)))


@dataclass(frozen=True)
class FigureKind:
    """One figure of the report, drawn once per key its section gives."""

    name: str  # a str.format pattern over the figure's key, e.g. "edf_{optimizer}_{epochs}ep"
    section: str
    data: Callable[[Arms, dict[str, Any]], Any]  # (arms, key) -> figure data
    plot: Callable[[Any, dict[str, str]], Any]  # (figure data, colours) -> plotly figure
    wide: bool = False  # spans the page instead of sharing a row
    height: Callable[[Arms], int] | None = None  # overrides the plot's own height


def _edf(a: Arms, k: dict[str, Any], delta: bool = False):
    """Error EDFs of one slice (delta: error minus each arm's best)."""
    return an.edf_data(a.trials, k["optimizer"], k["epochs"], delta=delta, split_by=a.split_by, seed=a.seed)


def _by_factor(data, k: dict[str, Any]):
    """The figure data titled with the factor its arms are split by."""
    data.title = f"{data.title}, by {k['column']}"
    return data


def _curves(a: Arms, k: dict[str, Any]):
    """Top-1 error and train loss of the best and worst trials."""
    return tuple(an.learning_curves_data(a.trials, a.curves, k["optimizer"], k["epochs"], split_by=a.split_by,
                                         metric=metric) for metric in (ERROR, "train_loss"))


def _legend_room(a: Arms) -> int:
    """Taller figures for many arms: their legend sits below the axis."""
    return 420 + 22 * max(0, len(a.colours) - 2)


FIGURES = [
    FigureKind("edf_{optimizer}_{epochs}ep", SLICE, _edf, an.plot_edf),
    FigureKind("edf_delta_{optimizer}_{epochs}ep", SLICE, lambda a, k: _edf(a, k, delta=True), an.plot_edf),
    FigureKind("hparams_{optimizer}_{epochs}ep", SLICE,
               lambda a, k: an.hparam_data(a.trials, k["optimizer"], k["epochs"], split_by=a.split_by, seed=a.seed),
               an.plot_hparams, wide=True),
    FigureKind("expected_best_{optimizer}_{epochs}ep", SLICE,
               lambda a, k: an.expected_best_data(a.trials, k["optimizer"], k["epochs"], split_by=a.split_by,
                                                  seed=a.seed),
               an.plot_lines, height=lambda a: 560),
    FigureKind("curves_{optimizer}_{epochs}ep", SLICE, _curves,
               lambda data, colours: an.plot_learning_curves(*data, colours)),
    FigureKind("edf_{optimizer}_{epochs}ep_by_{column}", FACTOR, lambda a, k: _by_factor(_edf(a, k), k), an.plot_edf,
               height=_legend_room),
    FigureKind("edf_delta_{optimizer}_{epochs}ep_by_{column}", FACTOR,
               lambda a, k: _by_factor(_edf(a, k, delta=True), k), an.plot_edf, height=_legend_room),
    FigureKind("optimizers_{epochs}ep", OPTIMIZERS,
               lambda a, k: an.optimizer_data(a.trials, k["epochs"], split_by=a.split_by), an.plot_optimizers),
    FigureKind("epochs", EPOCHS, lambda a, k: an.epochs_data(a.trials, split_by=a.split_by), an.plot_lines, wide=True),
    FigureKind("patch_cos_sim_layers_{epochs}ep", LAYERS,
               lambda a, k: an.layer_similarity_data(a.trials, k["epochs"], split_by=a.split_by),
               an.plot_layer_similarity),
]


def draw(section: str, arms: Arms, keys: Iterable[dict[str, Any]]) -> list[Figure]:
    """The figures of one section: for each key in order, every entry of FIGURES for that section."""
    figures = []
    for key in keys:
        for kind in FIGURES:
            if kind.section != section:
                continue
            figure = kind.plot(kind.data(arms, key), arms.colours)
            if kind.height:
                figure.update_layout(height=kind.height(arms))
            figures.append(Figure(kind.name.format(**key), figure, kind.wide))
    return figures
