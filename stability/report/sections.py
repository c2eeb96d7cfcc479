"""The report page, section by section, from the summary, the trials and the figure registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

import analysis as an
from stability.report.figures import EPOCHS, FACTOR, LAYERS, OPTIMIZERS, SLICE, Arms, arms, draw
from stability.report.page import Heading, Note, Page, Section, Verdict
from stability.report.tables import failed_table, ks_table, spec_listings, summary_table

SUMMARY_NOTE = ("Per group, over every trial that did not fail (diverged trials count at their recorded error). "
                "Brackets: 95% bootstrap intervals; good ranges: pycls bootstrap of the best of 25% of the runs, "
                "median [2.5%, 97.5%].")
SLICE_NOTE = ("EDFs: share of trials at or below an error (bands: 95% pointwise bootstrap). Hyper-parameter panels: "
              "crosses are diverged trials; the bars below are the good ranges (median marked). Expected best of k: "
              "the error a random search of k trials reaches on average.")
OPTIMIZERS_NOTE = ("Error of every trial per optimizer; diamonds mark the best (tuned) trial, the gap is between the "
                   "best errors.")
EPOCHS_NOTE = "Best (solid) and median (dashed) error of each training budget."
LAYERS_NOTE = ("Mean pairwise cosine similarity between patch tokens after each block, on validation images "
               "(higher: more over-smoothed; Gong et al. 2021). Lines: median over the trials that ended normally "
               "(diverged and failed ones left out); bands: interquartile range. One panel per optimizer.")
KS_NOTE = "Two-sample KS statistic D = sup |F1 - F2| between error EDFs, with its p-value (scipy.stats.ks_2samp)."


def _n_status(trials: pd.DataFrame, status: str) -> int:
    return int((trials["status"].astype(str) == status).sum())


def slice_sections(main: Arms) -> list[Section]:
    """One section per (optimizer, epochs): EDFs, hyper-parameters, expected best, learning curves."""
    return [Section(f"slice-{o}-{e}", f"{o}, {e} epochs", f"{o}, {e} ep",
                    draw(SLICE, main, [{"optimizer": o, "epochs": e}]), note=SLICE_NOTE)
            for o, e in an.slices(main.trials)]


def factor_sections(main: Arms, factors: list[dict[str, Any]], params: Sequence[str], multi_study: bool) -> list[Section]:
    """Per factor column: the group statistics and every slice's EDFs with arms split by it."""
    sections = []
    for factor in factors:
        column = factor["column"]
        split = arms(main.trials, main.curves, [*main.split_by, column], main.seed)
        keys = [{"column": column, "optimizer": o, "epochs": e} for o, e in an.slices(main.trials)]
        levels = ", ".join("missing" if v is None else str(v) for v in factor["levels"])
        sections.append(Section(
            f"factor-{column}", f"Split by {column}", f"by {column}",
            [summary_table(factor["groups"], split.split_by, params, multi_study), *draw(FACTOR, split, keys)],
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


def ks_section(data: dict[str, Any], split_by: Sequence[str]) -> Section:
    split = f" Arms are split by {', '.join(split_by)}." if split_by else ""
    return Section("ks", "Kolmogorov-Smirnov tests", "KS tests", [
        Heading("Between models"), ks_table(data["ks"], ["optimizer", "epochs"]),
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
                "signed-rank test on the per-point differences. A verdict needs both: the interval clear of 0.5 "
                "and p < 0.05.")


def verdict_section(verdicts: Sequence[dict[str, Any]], edges: Sequence[dict[str, Any]] = ()) -> list[Section]:
    """The verdict card: one sentence per pair of models, decided ones first, then the best trials
    found at the edge of their search range (the box, not the model, may have decided); it opens the page."""
    if not verdicts and not edges:
        return []
    ordered = sorted(verdicts, key=lambda v: (v["decision"] == "undecided", v["study"], v["optimizer"], v["epochs"]))
    blocks: list = [Verdict(v["sentence"], v["decision"] != "undecided") for v in ordered]
    blocks += [Note(f"edge of the range: the best {e['model']} trial under {e['optimizer']} at {e['epochs']} epochs "
                    f"has {e['knob']} in the {e['edge']} 10% of its range") for e in edges]
    return [Section("verdicts", "Verdicts", "Verdicts", blocks, note=VERDICT_NOTE)]


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
               split_by: Sequence[str], params: Sequence[str], seed: int = 0) -> Page:
    """The whole report: summary, slices, factors, optimizers, budgets, layers, KS tests, failures, specs."""
    main = arms(trials, curves, split_by, seed)
    multi_study = trials["study"].nunique() > 1
    title, subtitle = _header(trials, records)
    return Page(title, subtitle, [
        *verdict_section(data.get("verdicts") or [], data.get("edge_warnings") or []),
        Section("summary", "Summary", "Summary", [summary_table(data["groups"], split_by, params, multi_study)],
                note=SUMMARY_NOTE),
        *slice_sections(main),
        *factor_sections(main, data.get("factors") or [], params, multi_study),
        *optimizer_section(main),
        *epochs_section(main),
        *layer_section(main),
        ks_section(data, split_by),
        *failed_section(trials),
        Section("spec", "Study spec", "Study spec", spec_listings(records)),
    ])
