"""The data of every report figure, one pure function each (rendered by `analysis.plots`).

Each function takes the trials frame (and the curves frame where needed), selects one
(optimizer, epochs) slice, and returns plain dataclasses of numpy arrays and raw strings.
Arms are the compared lines of a figure: a model (prefixed by its study when several studies
are compared, suffixed by the user's split columns).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stability.analysis.bands import CONTINUOUS as LD, SAMPLES_PER_K, TIES, tuning_curve
from stability.analysis.bands import edf_band as exact_edf_band
from stability.analysis.best_of_k import ESTIMATORS, LOW_VARIANCE, UNBIASED, expected_best_with_replacement
from stability.analysis.edf import delta_to_best, edf, edf_band, edf_grid, normalized_weights
from stability.analysis.stats import (
    ERROR,
    arm_fields,
    arm_label,
    expected_best,
    expected_best_curve,
    good_range,
    iter_groups,
    usable_trials,
)

LR_WD = "lr*wd"
EXPECTED_BEST = "expected best, unbiased (Tang et al. 2020)"  # the legend entry of the dashed lines
PARAM_TITLES = {"lr": "learning rate", "weight_decay": "weight decay", LR_WD: "lr x weight decay"}


@dataclass
class Line:
    """One curve: points (x, y), an optional band (band_x, lo, hi), hover text per point."""

    arm: str
    name: str
    x: np.ndarray
    y: np.ndarray
    band_x: np.ndarray | None = None
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    text: list[str] | None = None
    dash: str = "solid"
    step: bool = False
    panel: str = ""  # lines of different panels are drawn side by side
    group: str = ""  # lines sharing one legend entry of their own (e.g. another estimator), not the arm's
    hidden: bool = False  # drawn only once its legend entry is clicked


@dataclass
class LinesData:
    title: str
    x_title: str
    y_title: str
    lines: list[Line]
    x_log: bool = False
    subtitle: str = ""  # how to read the figure (line styles)


@dataclass
class Points:
    arm: str
    x: np.ndarray
    y: np.ndarray
    diverged: np.ndarray
    text: list[str]


@dataclass
class Frontier:
    """The stability frontier of an arm (`analysis.frontier`): the lr where P(diverged) reaches
    `level`, with its bootstrap interval (lo, hi: None without one)."""

    lr: float
    lo: float | None
    hi: float | None
    level: float


@dataclass
class HparamPanel:
    param: str
    title: str
    log: bool
    points: list[Points]
    ranges: dict[str, tuple[float, float, float]]  # arm -> good range (lo, median, hi)


@dataclass
class HparamData:
    title: str
    panels: list[HparamPanel]
    frontier: dict[str, Frontier] = field(default_factory=dict)  # arm -> its frontier, drawn on the lr panel


@dataclass
class OptimizerBox:
    arm: str
    optimizer: str
    errors: np.ndarray
    best: float


@dataclass
class OptimizerData:
    title: str
    boxes: list[OptimizerBox]
    gaps: dict[str, float] = field(default_factory=dict)  # arm -> best of last optimizer - best of first


def slices(trials: pd.DataFrame) -> list[tuple[str, int]]:
    """The (optimizer, epochs) pairs present among usable trials, sorted."""
    usable = usable_trials(trials)
    pairs = usable[["optimizer", "epochs"]].drop_duplicates().itertuples(index=False)
    return sorted((str(o), int(e)) for o, e in pairs)


def _select(trials: pd.DataFrame, optimizer: str, epochs: int, split_by: Sequence[str]):
    """The usable rows of one slice and the fields naming its arms (decided on the whole study,
    so an arm has the same name, and colour, in every figure)."""
    usable = usable_trials(trials)
    rows = usable[(usable["optimizer"] == optimizer) & (usable["epochs"] == epochs)]
    return rows, arm_fields(usable, split_by)


def _arms(rows: pd.DataFrame, fields: list[str]):
    for key, g in iter_groups(rows, fields):
        yield arm_label(key, fields), g


def _hover(rows: pd.DataFrame) -> list[str]:
    return [f"trial {t}\nlr {lr:.3g}, wd {wd:.3g}\nerror {e:.2f} ({s})" for t, lr, wd, e, s in
            zip(rows["trial_id"], rows["lr"], rows["weight_decay"], rows[ERROR], rows["status"])]


def edf_data(trials: pd.DataFrame, optimizer: str, epochs: int, *, delta: bool = False, split_by: Sequence[str] = (),
             weight_by: str | None = None, bins: int = 10, n_boot: int = 200, seed: int = 0) -> LinesData:
    """EDF of each arm's errors (or of error minus the arm's best with `delta`), labelled
    `arm [n, best, mean]` (pycls' n | min | mean), with its exact simultaneous band (`analysis.bands`; the
    delta EDF: a pointwise bootstrap band); `weight_by` a covariate column gives the normalised EDF (no band)."""
    rows, fields = _select(trials, optimizer, epochs, split_by)
    arms = list(_arms(rows, fields))
    methods: dict[str, str | None] = {}
    values = {arm: g[ERROR].to_numpy(float) for arm, g in arms}
    shown = {arm: delta_to_best(v) if delta else v for arm, v in values.items()}
    grid = edf_grid(*shown.values())
    lines = []
    for arm, g in arms:
        v = values[arm]
        weights = normalized_weights(g[weight_by].to_numpy(float), bins) if weight_by else None
        x, y = edf(shown[arm], weights)
        line = Line(arm, f"{arm} [n={len(v)}, best={v.min():.2f}, mean={v.mean():.2f}]", x, y, step=True)
        if weight_by is None and delta:
            lo, hi = edf_band(v, grid, delta=delta, n_boot=n_boot, seed=seed)
            line.band_x, line.lo, line.hi = grid, lo, hi
        elif weight_by is None:
            band = exact_edf_band(v, seed=seed)
            methods[arm] = band["method"]
            if band["method"]:
                line.band_x, line.lo, line.hi = band["error"], band["lower"], band["upper"]
        lines.append(line)
    kind = "top-1 error minus best (points)" if delta else "top-1 error (%)"
    title = f"{'Delta-to-best' if delta else 'Error'} EDF{' (normalised by ' + weight_by + ')' if weight_by else ''}: " \
            f"{optimizer}, {epochs} epochs"
    subtitle = "bands: 95% pointwise bootstrap" if delta and weight_by is None else band_words(methods)
    return LinesData(title, kind, "cumulative share of trials", lines, subtitle=subtitle)


def band_words(methods: dict[str, str | None]) -> str:
    """How the exact bands of these arms were made (`analysis.bands`), in a line."""
    if not methods:
        return ""
    name = {TIES: "DKW", LD: "Learned-Miller-DeStefano"}
    used = [f"{name[m]} for {sum(v == m for v in methods.values())} of {len(methods)}{' (tied errors)' * (m == TIES)}"
            for m in (TIES, LD) if m in methods.values()]
    none = sum(v is None for v in methods.values())
    return ("simultaneous 95% bands (Lourie et al. 2024, opda)\n" + "; ".join(used)
            + (f"; {none} with fewer than 2 trials have none" if none else ""))


def expected_best_data(trials: pd.DataFrame, optimizer: str, epochs: int, *, split_by: Sequence[str] = (),
                       n_boot: int = 200, seed: int = 0, low_variance: bool = True) -> LinesData:
    """Expected best error of k trials, k = 1..n: the unbiased estimator (k drawn without
    replacement) with a bootstrap band and, with `low_variance`, the lower-variance estimator of
    Dodge et al. 2021 (with replacement) as dotted lines shown on request."""
    rows, fields = _select(trials, optimizer, epochs, split_by)
    lines = []
    for arm, g in _arms(rows, fields):
        errors = g[ERROR].to_numpy(float)
        ks, mean, lo, hi = expected_best_curve(errors, n_boot=n_boot, seed=seed)
        lines.append(Line(arm, arm, ks.astype(float), mean, ks.astype(float), lo, hi))
        if low_variance:
            low = expected_best_with_replacement(errors, ks)
            lines.append(Line(arm, f"{arm}, {ESTIMATORS[LOW_VARIANCE]}", ks.astype(float),
                              np.array([low[int(k)] for k in ks]), dash="dot", group=ESTIMATORS[LOW_VARIANCE],
                              hidden=True))
    subtitle = "unbiased estimator (k of the n trials without replacement), 95% bootstrap band" + (
        "\ndotted: lower-variance estimator (Dodge et al. 2021), from its legend entry" if low_variance else "")
    return LinesData(f"Expected best of k trials: {optimizer}, {epochs} epochs", "trials k",
                     "expected best top-1 error (%), unbiased", lines, x_log=True, subtitle=subtitle)


def tuning_curve_data(trials: pd.DataFrame, optimizer: str, epochs: int, *, split_by: Sequence[str] = (),
                      seed: int = 0, low_variance: bool = True) -> LinesData:
    """Tuning curves, k = 1..n: the median best error of k trials with its exact simultaneous 95% band
    (`analysis.bands`), the expected best of k (unbiased estimator, dashed) and, with `low_variance`,
    the lower-variance estimator of Dodge et al. 2021 (dotted, shown on request)."""
    rows, fields = _select(trials, optimizer, epochs, split_by)
    lines, methods, informative = [], {}, {}
    for arm, g in _arms(rows, fields):
        errors = g[ERROR].to_numpy(float)
        curve = tuning_curve(errors, seed=seed)
        ks = np.asarray(curve["k"], dtype=float)
        methods[arm], informative[arm] = curve["method"], (curve["informative_k"], len(errors))
        line = Line(arm, arm, ks, np.asarray(curve["median"], dtype=float))
        shown = curve["informative_k"] or 0  # beyond it the band reaches 0 or 100%: drawn where it says something
        if curve["method"] and shown:
            line.band_x, line.lo, line.hi = ks[:shown], np.asarray(curve["lower"])[:shown], \
                np.asarray(curve["upper"])[:shown]
        lines.append(line)
        mean = expected_best(errors, ks.astype(int))
        lines.append(Line(arm, f"{arm}, expected best ({UNBIASED})", ks, np.array([mean[int(k)] for k in ks]),
                          dash="dash", group=EXPECTED_BEST))
        if low_variance:
            low = expected_best_with_replacement(errors, ks.astype(int))
            lines.append(Line(arm, f"{arm}, {ESTIMATORS[LOW_VARIANCE]}", ks, np.array([low[int(k)] for k in ks]),
                              dash="dot", group=ESTIMATORS[LOW_VARIANCE], hidden=True))
    none = sum(m is None for m in methods.values())
    subtitle = "solid: median best error of k trials, simultaneous 95% band (Lourie et al. 2024)\n" + \
        informative_words(informative) + (f"; {none} with fewer than 2 trials have none" if none else "") + \
        "\ndashed: expected best of k (unbiased)" + (
            "; dotted: lower-variance (Dodge et al. 2021), from its legend entry" if low_variance else "")
    return LinesData(f"Tuning curves: {optimizer}, {epochs} epochs", "trials k",
                     "best top-1 error after k trials (%)", lines, x_log=True, subtitle=subtitle)


def informative_words(informative: dict[str, tuple[int | None, int]]) -> str:
    """For which k the bands say something: (informative_k, n) per arm."""
    ks = [k or 0 for k, n in informative.values() if n >= 2]
    ns = [n for _, n in informative.values() if n >= 2]
    if not ks:
        return ""
    if max(ks) == 0:
        return "no band drawn: with this few trials it spans 0-100% at every k"
    span = f"{min(ks)}" if min(ks) == max(ks) else f"{min(ks)}-{max(ks)}"
    rule = f"{min(ns) / SAMPLES_PER_K:.0f}" if min(ns) == max(ns) else \
        f"{min(ns) / SAMPLES_PER_K:.0f}-{max(ns) / SAMPLES_PER_K:.0f}"
    return f"band drawn up to k = {span}, inside 0-100% (rule of thumb: n / 6.25 = {rule} at 80%)"


def hparam_data(trials: pd.DataFrame, optimizer: str, epochs: int, *, params: Sequence[str] = ("lr", "weight_decay", LR_WD),
                split_by: Sequence[str] = (), n_resamples: int = 2500, seed: int = 0,
                frontier: Sequence[dict[str, Any]] | None = None) -> HparamData:
    """Error against each hyper-parameter (diverged trials flagged), each arm's good range and
    stability frontier. `frontier`: rows of `analysis.frontier.stability_frontier` already
    computed for these trials (arms named by study and model take theirs from it); other arms
    get theirs computed from their own trials."""
    rows, fields = _select(trials, optimizer, epochs, split_by)
    rows = rows.assign(**{LR_WD: rows["lr"] * rows["weight_decay"]})
    arms = list(_arms(rows, fields))
    panels = []
    for p in params:
        if p not in rows or not pd.api.types.is_numeric_dtype(rows[p]) or pd.api.types.is_bool_dtype(rows[p]):
            continue
        vals = rows[p].to_numpy(float)
        log = bool(np.all(vals[np.isfinite(vals)] > 0))
        points, ranges = [], {}
        for arm, g in arms:
            x = g[p].to_numpy(float)
            points.append(Points(arm, x, g[ERROR].to_numpy(float), (g["status"] == "diverged").to_numpy(), _hover(g)))
            ranges[arm] = good_range(g[ERROR].to_numpy(float), x, n_resamples=n_resamples, seed=seed)
        panels.append(HparamPanel(p, PARAM_TITLES.get(p, p), log, points, ranges))
    return HparamData(f"Error vs hyper-parameters: {optimizer}, {epochs} epochs", panels,
                      _frontiers(arms, fields, optimizer, epochs, frontier, seed))


def _frontiers(arms, fields: list[str], optimizer: str, epochs: int, given: Sequence[dict[str, Any]] | None,
               seed: int) -> dict[str, Frontier]:
    """Each arm's frontier where its trials have one (some diverged, some not)."""
    from stability.analysis.frontier import stability_frontier

    known = {}
    if given is not None and set(fields) <= {"study", "model"}:
        known = {arm_label(r, fields): r for r in given if r.get("optimizer") == optimizer and r.get("epochs") == epochs}
    found = {}
    for arm, g in arms:
        row = known.get(arm) or (stability_frontier(g, seed=seed) or [None])[0]
        if row and row.get("max_stable_lr") is not None:
            lo, hi = row.get("max_stable_lr_ci") or (None, None)
            found[arm] = Frontier(float(row["max_stable_lr"]), lo, hi, float(row["level"]))
    return found


def learning_curves_data(trials: pd.DataFrame, curves: pd.DataFrame, optimizer: str, epochs: int, *,
                         split_by: Sequence[str] = (), metric: str = ERROR) -> LinesData:
    """Per-epoch `metric` of each arm's best (solid) and worst (dotted) trial."""
    rows, fields = _select(trials, optimizer, epochs, split_by)
    lines = []
    for arm, g in _arms(rows, fields):
        ordered = g.sort_values([ERROR, "trial_id"], kind="stable")
        picks = [("best", "solid", ordered.iloc[0])]
        if len(ordered) > 1:
            picks.append(("worst", "dot", ordered.iloc[-1]))
        for which, dash, trial in picks:
            c = curves[(curves["study"] == trial["study"]) & (curves["trial_id"] == trial["trial_id"])].sort_values("epoch")
            y = pd.to_numeric(c[metric], errors="coerce").to_numpy(float)
            y = np.where(np.isfinite(y), y, np.nan)
            name = f"{arm} {which} ({trial[ERROR]:.2f}, {trial['status']})"
            lines.append(Line(arm, name, c["epoch"].to_numpy(float), y, dash=dash,
                              text=[f"trial {trial['trial_id']}"] * len(c)))
    y_title = {ERROR: "top-1 error (%)", "train_loss": "train loss"}.get(metric, metric)
    return LinesData(f"Learning curves: {optimizer}, {epochs} epochs", "epoch", y_title, lines,
                     subtitle="solid: each arm's best trial, dotted: its worst")


def optimizer_data(trials: pd.DataFrame, epochs: int, *, split_by: Sequence[str] = ()) -> OptimizerData:
    """Error distribution and best error of each optimizer per arm (optimizer stability), and
    the gap between the best errors of the last and first optimizer (alphabetical: sgd - adamw)."""
    usable = usable_trials(trials)
    rows = usable[usable["epochs"] == epochs]
    fields = arm_fields(usable, split_by)
    boxes, gaps = [], {}
    for arm, g in _arms(rows, fields):
        best = {}
        for key, r in iter_groups(g, ["optimizer"]):
            e = r[ERROR].to_numpy(float)
            best[key["optimizer"]] = float(e.min())
            boxes.append(OptimizerBox(arm, str(key["optimizer"]), e, float(e.min())))
        if len(best) > 1:
            names = sorted(best)
            gaps[arm] = best[names[-1]] - best[names[0]]
    return OptimizerData(f"Optimizer stability: {epochs} epochs", boxes, gaps)


def epochs_data(trials: pd.DataFrame, *, split_by: Sequence[str] = ()) -> LinesData:
    """Best (solid) and median (dashed) error against the training length, per arm, one panel
    per optimizer."""
    usable = usable_trials(trials)
    fields = arm_fields(usable, split_by)
    lines = []
    for key, g in iter_groups(usable, ["optimizer"] + fields):
        arm = arm_label(key, fields)
        per = g.groupby("epochs")[ERROR].agg(["min", "median"]).sort_index()
        x = per.index.to_numpy(float)
        lines.append(Line(arm, f"{arm} best", x, per["min"].to_numpy(float), panel=str(key["optimizer"])))
        lines.append(Line(arm, f"{arm} median", x, per["median"].to_numpy(float), dash="dash", panel=str(key["optimizer"])))
    return LinesData("Training-length stability", "epochs", "top-1 error (%)", lines, x_log=True,
                     subtitle="solid: best trial, dashed: median")


def epoch_budgets(trials: pd.DataFrame) -> list[int]:
    return sorted(int(e) for e in usable_trials(trials)["epochs"].unique())


def arm_names(trials: pd.DataFrame, split_by: Sequence[str] = ()) -> list[str]:
    """Every arm of the study in a stable order (for one colour per arm across figures)."""
    usable = usable_trials(trials)
    return [arm for arm, _ in _arms(usable, arm_fields(usable, split_by))]


def arm_models(trials: pd.DataFrame, split_by: Sequence[str] = ()) -> dict[str, str]:
    """The model of every arm of the study, arms in `arm_names` order (what facets group)."""
    usable = usable_trials(trials)
    return {arm: str(g["model"].iloc[0]) for arm, g in _arms(usable, arm_fields(usable, split_by))}


CONTINUOUS = {"log_uniform", "uniform", "int_uniform"}


def sampled_columns(trials: pd.DataFrame, knobs: Sequence[dict[str, Any]]) -> list[str]:
    """lr, weight_decay and every other numeric knob column the study samples from a continuous
    distribution, from study.yaml's `knobs` records (choices are factors, see `analysis.factors`)."""
    found = ["lr", "weight_decay"]
    for knob in knobs:
        column = knob.get("column")
        if knob.get("kind") in CONTINUOUS and column in trials and column not in found \
                and pd.api.types.is_numeric_dtype(trials[column]):
            found.append(column)
    return found
