"""Every figure of the report, one entry each in FIGURES: its name, the section that draws it, the
`analysis` function computing its data and the `analysis.plots` function rendering that data.

A new figure is one more entry here (with its data and plot functions in `analysis`); each
section draws its entries in this order, once per key the section gives (e.g. per training budget).
Figures are drawn as small multiples, one panel per facet of the arms (`analysis.facets`,
`--facet-by`); a faceted figure spans the page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

import stability.analysis as an
from stability.analysis.facets import Facet, display_order, facet_mode, facets, parse_model
from stability.analysis.figures import arm_models
from stability.analysis.stats import ERROR
from stability.report.page import Figure

# the sections that draw figures (see stability.report.sections), and the keys of each figure there
SLICE = "slice"  # one section per (optimizer, epochs): key {optimizer, epochs}
FACTOR = "factor"  # one section per factor column: key {column, optimizer, epochs} per slice
OPTIMIZERS = "optimizers"  # key {epochs} per training budget
EPOCHS = "epochs"  # one figure: key {}
LAYERS = "layers"  # key {epochs} per budget with per-block similarities
VERDICTS = "verdicts"  # key {study, optimizer, epochs} per set of verdicts (at MATRIX_MODELS models or more)
WIDE_ARMS = 4  # figures of more arms than this span the page


@dataclass(frozen=True)
class Arms:
    """What a section's figures are drawn from: the frames, the columns splitting models into arms,
    the bootstrap seed, one colour per arm (the same in every figure of the section), the facets
    the figures are drawn in and the stability frontier already computed for the summary."""

    trials: pd.DataFrame
    curves: pd.DataFrame
    split_by: tuple[str, ...]
    seed: int
    colours: dict[str, str]
    facets: tuple[Facet, ...] = ()
    frontier: tuple[dict[str, Any], ...] | None = None
    models: dict[str, str] = field(default_factory=dict)  # arm -> its model
    facet_by: str = "auto"  # as asked (--facet-by)
    mode: str = "none"  # what it resolved to: size, family, model or none
    verdicts: tuple[dict[str, Any], ...] = ()  # the summary's verdicts, for the verdict matrices

    @property
    def faceted(self) -> bool:
        return len(self.facets) > 1

    def whole(self) -> Arms:
        """The same arms in one panel (the unfaceted figure)."""
        return replace(self, facets=(Facet("", tuple(a for f in self.facets for a in f.arms)),))


def arms(trials: pd.DataFrame, curves: pd.DataFrame, split_by: Sequence[str], seed: int, facet_by: str = "auto",
         frontier: Sequence[dict[str, Any]] | None = None) -> Arms:
    """The arms of the study split by `split_by`, in facets (`facet_by`), coloured in a stable
    order: faceted by size with one arm per model, one hue per family and a shade per size."""
    models = arm_models(trials, split_by)
    mode = facet_mode(list(models.values()), facet_by)
    shades = None
    if mode == "size" and len(set(models.values())) == len(models):
        shades = {arm: (parse_model(m).family, parse_model(m).rank) for arm, m in models.items()}
    return Arms(trials, curves, tuple(split_by), seed, an.colour_map(list(models), shades),
                tuple(facets(models, facet_by)), None if frontier is None else tuple(frontier), models, facet_by, mode)


@dataclass(frozen=True)
class FigureKind:
    """One figure of the report, drawn once per key its section gives."""

    name: str  # a str.format pattern over the figure's key, e.g. "edf_{optimizer}_{epochs}ep"
    section: str
    data: Callable[[Arms, dict[str, Any]], Any]  # (arms, key) -> figure data
    plot: Callable[..., Any]  # (figure data, colours, facets) -> plotly figure
    wide: bool = False  # spans the page instead of sharing a row (as every faceted figure does)
    height: Callable[[Arms], int] | None = None  # overrides the plot's own height
    whole: str = ""  # the name of its unfaceted version, drawn (folded) under a faceted one
    narrow: bool = False  # shares a row however many arms the study has


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


FIGURES = [
    FigureKind("edf_{optimizer}_{epochs}ep", SLICE, _edf, an.plot_edf, whole="edf_all_{optimizer}_{epochs}ep"),
    FigureKind("edf_delta_{optimizer}_{epochs}ep", SLICE, lambda a, k: _edf(a, k, delta=True), an.plot_edf),
    FigureKind("hparams_{optimizer}_{epochs}ep", SLICE,
               lambda a, k: an.hparam_data(a.trials, k["optimizer"], k["epochs"], split_by=a.split_by, seed=a.seed,
                                           frontier=a.frontier),
               an.plot_hparams, wide=True),
    FigureKind("tuning_curve_{optimizer}_{epochs}ep", SLICE,
               lambda a, k: an.tuning_curve_data(a.trials, k["optimizer"], k["epochs"], split_by=a.split_by,
                                                 seed=a.seed),
               an.plot_lines),
    FigureKind("curves_{optimizer}_{epochs}ep", SLICE, _curves,
               lambda data, colours, facets=None: an.plot_learning_curves(*data, colours, facets)),
    FigureKind("edf_{optimizer}_{epochs}ep_by_{column}", FACTOR, lambda a, k: _by_factor(_edf(a, k), k), an.plot_edf),
    FigureKind("edf_delta_{optimizer}_{epochs}ep_by_{column}", FACTOR,
               lambda a, k: _by_factor(_edf(a, k, delta=True), k), an.plot_edf),
    FigureKind("optimizers_{epochs}ep", OPTIMIZERS,
               lambda a, k: an.optimizer_data(a.trials, k["epochs"], split_by=a.split_by), an.plot_optimizers),
    FigureKind("epochs", EPOCHS, lambda a, k: an.epochs_data(a.trials, split_by=a.split_by), an.plot_lines, wide=True),
    FigureKind("verdict_matrix_{study}_{optimizer}_{epochs}ep", VERDICTS,
               lambda a, k: an.verdict_matrix_data(a.verdicts, k["study"], k["optimizer"], k["epochs"],
                                                   display_order(list(a.models.values()), a.facet_by)),
               an.plot_verdict_matrix, narrow=True),
    FigureKind("patch_cos_sim_layers_{epochs}ep", LAYERS,
               lambda a, k: an.layer_similarity_data(a.trials, k["epochs"], split_by=a.split_by),
               an.plot_layer_similarity),
]


def _plot(kind: FigureKind, arms: Arms, key: dict[str, Any], name: str) -> Figure:
    figure = kind.plot(kind.data(arms, key), arms.colours, arms.facets or None)
    if kind.height:
        figure.update_layout(height=kind.height(arms))
    shown = tuple(t for t in ((figure.layout.meta or {}).get("facets") or []) if t)
    return Figure(name, figure, kind.wide or (not kind.narrow and (len(shown) > 1 or len(arms.colours) > WIDE_ARMS)),
                  shown)


def draw(section: str, arms: Arms, keys: Iterable[dict[str, Any]]) -> list[Figure]:
    """The figures of one section: for each key in order, every entry of FIGURES for that section,
    each faceted one followed by its unfaceted version when it names one."""
    figures = []
    for key in keys:
        for kind in FIGURES:
            if kind.section != section:
                continue
            figures.append(_plot(kind, arms, key, kind.name.format(**key)))
            if kind.whole and figures[-1].facets:
                whole = _plot(kind, arms.whole(), key, kind.whole.format(**key))
                whole.folded = True
                figures.append(whole)
    return figures
