"""The report page, section by section, from the summary, the trials and the figure registry."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pandas as pd

import stability.analysis as an
from stability.analysis.best_of_k import ESTIMATORS, LOW_VARIANCE, UNBIASED
from stability.analysis.facets import display_order
from stability.analysis.verdict_matrix import MATRIX_MODELS, matrix_models
from stability.report.figures import EPOCHS, FACTOR, LAYERS, OPTIMIZERS, SLICE, VERDICTS, Arms, arms, draw
from stability.report.page import Block, Details, Figure, Heading, Note, Page, Section, Verdict
from stability.report.tables import failed_table, ks_table, running_table, spec_listings, summary_table, trials_table

SUMMARY_NOTE = ("Per group, over every trial that did not fail (diverged trials count at their recorded error). "
                "Brackets: 95% bootstrap intervals; good ranges: pycls bootstrap of the best of 25% of the runs, "
                "median [2.5%, 97.5%]. lr sensitivity (Wortsman et al. 2023): the mean of min(error, chance error) "
                "over the group's trials minus its best error, in points (0: every sampled lr and wd trains as well "
                "as the best), its interval a bootstrap over the sampled points.")
SLICE_NOTE = ("EDFs: share of trials at or below an error, with simultaneous 95% bands that hold at any sample size "
              "(Lourie et al. 2024; Dvoretzky-Kiefer-Wolfowitz where errors tie, as diverged trials at chance error "
              "do; the delta-to-best EDF: a pointwise bootstrap). Hyper-parameter panels: "
              "crosses are diverged trials; the bars below are the good ranges (median marked); dashed vertical lines "
              "on the lr panel are the stability frontiers (the lr where the share of diverged trials reaches 10%, "
              "interval shaded). Tuning curves: the median best error a random search of k trials reaches, with its "
              "exact simultaneous 95% band (the band says something only up to the k its subtitle gives, about "
              "n / 6.25); dashed: the expected best of k, drawn "
              f"with the {ESTIMATORS[UNBIASED]}; the {ESTIMATORS[LOW_VARIANCE]} is one click away in its legend.")
FACET_WORDS = {"size": "model size", "family": "model family", "model": "model"}
OPTIMIZERS_NOTE = ("Error of every trial per optimizer; diamonds mark the best (tuned) trial, the gap is between the "
                   "best errors.")
EPOCHS_NOTE = "Best (solid) and median (dashed) error of each training budget."
LAYERS_NOTE = ("Mean pairwise cosine similarity between patch tokens after each block, on validation images "
               "(higher: more over-smoothed; Gong et al. 2021). Lines: median over the trials that ended normally "
               "(diverged and failed ones left out); bands: interquartile range. One panel per optimizer.")
KS_NOTE = "Two-sample KS statistic D = sup |F1 - F2| between error EDFs, with its p-value (scipy.stats.ks_2samp)."


def _n_status(trials: pd.DataFrame, status: str) -> int:
    return int((trials["status"].astype(str) == status).sum())


def facet_note(main: Arms) -> str:
    """How the figures are split into panels, when they are."""
    if not main.faceted:
        return ""
    return (f" Panels: one per {FACET_WORDS.get(main.mode, main.mode)} ({', '.join(f.title for f in main.facets)}), "
            "sharing their axes; each model has one colour in every panel and figure, and one legend entry per "
            "figure (click it to hide the model). Every model in one panel and every trial: below the figures. "
            "--facet-by chooses the panels.")


def _folded(figures: list, detail: list, summary: str) -> list[Block]:
    """The figures shown, then those folded (and `detail`) in one Details block."""
    folded = [f for f in figures if f.folded]
    shown: list[Block] = [f for f in figures if not f.folded]
    return shown + ([Details(summary, [*folded, *detail])] if folded else [])


def slice_sections(main: Arms, params: Sequence[str] = ("lr", "weight_decay")) -> list[Section]:
    """One section per (optimizer, epochs): EDFs, hyper-parameters, expected best, learning curves;
    faceted, with every model in one panel and every trial folded below."""
    sections = []
    for o, e in an.slices(main.trials):
        figures = draw(SLICE, main, [{"optimizer": o, "epochs": e}])
        blocks = _folded(figures, [trials_table(main.trials, o, e, params)],
                         f"Every model in one panel, and every trial ({o}, {e} epochs)")
        sections.append(Section(f"slice-{o}-{e}", f"{o}, {e} epochs", f"{o}, {e} ep", blocks,
                                note=SLICE_NOTE + facet_note(main)))
    return sections


def main_order(main: Arms) -> list[str]:
    """The study's models in the order its figures show them (tables follow it)."""
    return display_order(list(main.models.values()), main.facet_by)


def factor_sections(main: Arms, factors: list[dict[str, Any]], params: Sequence[str], multi_study: bool,
                    order: Sequence[str] = ()) -> list[Section]:
    """Per factor column: the group statistics (models in `order`) and every slice's EDFs with arms split by it."""
    sections = []
    for factor in factors:
        column = factor["column"]
        split = arms(main.trials, main.curves, [*main.split_by, column], main.seed, main.facet_by)
        keys = [{"column": column, "optimizer": o, "epochs": e} for o, e in an.slices(main.trials)]
        levels = ", ".join("missing" if v is None else str(v) for v in factor["levels"])
        sections.append(Section(
            f"factor-{column}", f"Split by {column}", f"by {column}",
            [summary_table(factor["groups"], split.split_by, params, multi_study, order),
             *_folded(draw(FACTOR, split, keys), [], f"Every arm in one panel (split by {column})")],
            note=f"{column} takes {len(factor['levels'])} values in this study ({levels}); every arm below is a model "
                 f"at one of them. Same statistics and EDFs as above."))
    return sections


def optimizer_section(main: Arms) -> list[Section]:
    """Optimizer stability per training budget, when the study has several optimizers."""
    if main.trials["optimizer"].nunique() < 2:
        return []
    keys = [{"epochs": e} for e in an.epoch_budgets(main.trials)]
    return [Section("optimizers", "Optimizer stability", "Optimizers", draw(OPTIMIZERS, main, keys),
                    note=OPTIMIZERS_NOTE)]


def epochs_section(main: Arms) -> list[Section]:
    """Training-length stability, when the study has several budgets."""
    if len(an.epoch_budgets(main.trials)) < 2:
        return []
    return [Section("epochs", "Training-length stability", "Training length", draw(EPOCHS, main, [{}]),
                    note=EPOCHS_NOTE)]


def layer_section(main: Arms) -> list[Section]:
    """Over-smoothing by depth, when some trial recorded per-block similarities."""
    if not an.has_layer_similarity(main.trials):
        return []
    keys = [{"epochs": e} for e in an.layer_budgets(main.trials)]
    return [Section("layers", "Over-smoothing: patch cosine similarity by layer", "Over-smoothing",
                    draw(LAYERS, main, keys), note=LAYERS_NOTE)]


def ks_section(data: dict[str, Any], split_by: Sequence[str], panel_of: dict[str, str] | None = None) -> Section:
    """KS tests between models (pairs drawn in different panels folded away) and between optimizers."""
    split = f" Arms are split by {', '.join(split_by)}." if split_by else ""
    rows = data["ks"]
    across = [r for r in rows if panel_of and panel_of.get(r["a"]) != panel_of.get(r["b"])]
    same = [r for r in rows if not (panel_of and panel_of.get(r["a"]) != panel_of.get(r["b"]))]
    models: list = [ks_table(same, ["optimizer", "epochs"])]
    if across:
        models.append(Details(f"{len(across)} more pairs, between models drawn in different panels",
                              [ks_table(across, ["optimizer", "epochs"])]))
    return Section("ks", "Kolmogorov-Smirnov tests", "KS tests", [
        Heading("Between models"), *models,
        Heading("Between optimizers"), ks_table(data["ks_optimizers"], ["arm", "epochs"])], note=KS_NOTE + split)


def failed_section(trials: pd.DataFrame) -> list[Section]:
    n_failed = _n_status(trials, "failed")
    if not n_failed:
        return []
    return [Section("failed", f"Failed trials ({n_failed})", "Failed", [failed_table(trials)],
                    note="Left out of every statistic and figure.")]


def _names(trials: pd.DataFrame, column: str) -> str:
    return ", ".join(sorted(trials[column].astype(str).unique()))


VERDICT_NOTE = ("Paired over the sampled points (every model saw the same ones): P is the share of points where the "
                "first model's error is lower (ties count one half) with its 95% Wilson interval; Wilcoxon is the "
                "signed-rank test on the per-point differences, its p-values Holm-adjusted over every verdict of the "
                "study (the chance of any false verdict stays under 5%). A verdict needs both: the interval clear of "
                "0.5 and the adjusted p < 0.05. A clause names the model less sensitive to its learning rate when "
                "the two lr sensitivities' intervals do not overlap. From 4 models on, one matrix per optimizer and "
                "budget shows every pair at once, the sentences folded below.")


def verdict_section(verdicts: Sequence[dict[str, Any]], edges: Sequence[dict[str, Any]] = (),
                    panel_of: dict[str, str] | None = None, matrices: Sequence[Figure] = ()) -> list[Section]:
    """The verdict card: one sentence per pair of models, decided ones first, then the best trials
    found at the edge of their search range (the box, not the model, may have decided); it opens the page.
    With `panel_of` (model -> the facet it is drawn in), pairs drawn in different panels are folded
    away, as the figures compare what shares a panel. With `matrices` (one per study, optimizer and
    budget, drawn from MATRIX_MODELS models on), the card opens with them and every sentence is folded."""
    if not verdicts and not edges:
        return []
    ordered = sorted(verdicts, key=lambda v: (v["decision"] == "undecided", v["study"], v["optimizer"], v["epochs"]))
    panel_of = panel_of or {}
    same = [v for v in ordered if panel_of.get(v["a"]) == panel_of.get(v["b"])]
    across = [v for v in ordered if panel_of.get(v["a"]) != panel_of.get(v["b"])]
    blocks: list = [Verdict(v["sentence"], v["decision"] != "undecided") for v in same]
    if matrices:
        blocks = [*matrices, Details(f"Every verdict as a sentence ({len(ordered)}, decided ones first)",
                                     [Verdict(v["sentence"], v["decision"] != "undecided") for v in ordered])]
    elif across:
        blocks.append(Details(f"{len(across)} more verdicts, between models drawn in different panels",
                              [Verdict(v["sentence"], v["decision"] != "undecided") for v in across]))
    blocks += [Note(f"edge of the range: the best {e['model']} trial under {e['optimizer']} at {e['epochs']} epochs "
                    f"has {e['knob']} in the {e['edge']} 10% of its range") for e in edges]
    return [Section("verdicts", "Verdicts", "Verdicts", blocks, note=VERDICT_NOTE)]


def running_section(records: Sequence[dict[str, Any]], now: float) -> list[Section]:
    """The trials running when the report was written, when some folder's running.json lists any."""
    running = sum(len(r.get("running_trials") or []) for r in records)
    if not running:
        return []
    clock = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    return [Section("running", f"Running now ({running})", "Running", [running_table(records, now)],
                    note=f"The study is still running: {running} trial(s) in progress when this report was written "
                         f"({clock}). Every figure and statistic is drawn from the finished trials; write the report "
                         "again to see more.")]


def _header(trials: pd.DataFrame, records: Sequence[dict[str, Any]]) -> tuple[str, list[str]]:
    """The page title and the subtitle lines: counts, folders, models, optimizers, budgets."""
    counts = f"{len(trials)} trials ({_n_status(trials, 'diverged')} diverged, {_n_status(trials, 'failed')} failed)"
    running = sum(int(r.get("running") or 0) for r in records)
    if running:
        counts += f"; {running} still running"
    epochs = ", ".join(str(e) for e in sorted(trials["epochs"].unique()))
    skipped = [f"{r['path']}: skipped {len(r['skipped'])} damaged file(s): {', '.join(r['skipped'])}"
               for r in records if r.get("skipped")]
    return f"Stability report: {_names(trials, 'study')}", [
        f"{counts} from {', '.join(r['path'] for r in records)}",
        f"models: {_names(trials, 'model')}; optimizers: {_names(trials, 'optimizer')}; epochs: {epochs}", *skipped]


def build_page(trials: pd.DataFrame, curves: pd.DataFrame, records: Sequence[dict[str, Any]], data: dict[str, Any],
               split_by: Sequence[str], params: Sequence[str], seed: int = 0, facet_by: str = "auto",
               now: float | None = None) -> Page:
    """The whole report: verdicts, running trials, summary, slices, factors, optimizers, budgets,
    layers, KS tests, failures, specs. `facet_by`: how figures are split into panels
    (`analysis.facets`); `now`: the time the report is written (Unix time, default now)."""
    main = replace(arms(trials, curves, split_by, seed, facet_by, data.get("frontier")),
                   verdicts=tuple(data.get("verdicts") or []))
    matrices = draw(VERDICTS, main, an.verdict_keys(main.verdicts)) \
        if matrix_models(main.verdicts) >= MATRIX_MODELS else []
    multi_study = trials["study"].nunique() > 1
    title, subtitle = _header(trials, records)
    panel_of = {main.models[a]: f.title for f in main.facets for a in f.arms} if main.faceted else None
    arm_panel = {a: f.title for f in main.facets for a in f.arms} if main.faceted else None
    order = main_order(main)
    return Page(title, subtitle, [
        *verdict_section(data.get("verdicts") or [], data.get("edge_warnings") or [], panel_of, matrices),
        *running_section(records, time.time() if now is None else now),
        Section("summary", "Summary", "Summary",
                [summary_table(data["groups"], split_by, params, multi_study, order)],
                note=SUMMARY_NOTE),
        *slice_sections(main, params),
        *factor_sections(main, data.get("factors") or [], params, multi_study, order),
        *optimizer_section(main),
        *epochs_section(main),
        *layer_section(main),
        ks_section(data, split_by, arm_panel),
        *failed_section(trials),
        Section("spec", "Study spec", "Study spec", spec_listings(records)),
    ], {"by": main.mode, "panels": [{"title": f.title, "models": sorted({main.models[a] for a in f.arms})}
                                    for f in main.facets]})
