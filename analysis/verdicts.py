"""Verdicts: is model A easier to train than model B, and how sure are we?

The studies are paired: every model sees the same sampled points. The unit of a verdict is the
point: each model's error at a point is the mean over its usable repeats there (diverged trials
count at their recorded error, failed ones are left out), so repeats never count twice. Per study,
optimizer and epochs, for each pair of models `a` < `b` (alphabetically):

- `p_a_better`: share of the paired points where a's error is lower (ties count one half), with
  its 95% Wilson score interval (a percentile bootstrap collapses to [1, 1] on 8 of 8);
- `wilcoxon_p`: the two-sided signed-rank test on the paired differences (zero differences,
  e.g. two diverged trials at chance, dropped; None when every difference is zero);
- `ks_D`, `ks_p`: the two-sample KS test on all usable trials of either model;
- `wilcoxon_p_holm`: that p-value adjusted by Holm's step-down method over every verdict of the
  study that has one (`holm_n` of them: all pairs, optimizers and budgets), which keeps the chance
  of any false verdict in the study under 5% (a 9-model study makes 36 pairs per optimizer);
- `decision`: "a" or "b" when the interval excludes one half and the Holm-adjusted p < 0.05,
  else "undecided"; `sentence`: one line a person reads;
- `seed_sd` (when either model ran some point with two or more seeds): the pooled seed noise of
  one trial, sqrt of the mean of the two models' within-point variances (`analysis.noise`; a
  model without repeats contributes nothing), and `within_seed_noise`: whether the mean paired
  difference |mean_diff| is smaller than it. Such a difference is one a reseed could produce,
  and the sentence says so, decided or not.

When `lr_sensitivity` rows are given (`analysis.sensitivity`) and the two models' intervals do
not overlap, the sentence says which model is the less sensitive to its learning rate.

Bouthillier et al. (2021) argue for P(A better than B) with its interval over a bare p-value; the
paired signed-rank test uses that every model saw the same points.
"""

from __future__ import annotations

import math
from itertools import combinations
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from stability.analysis.noise import variance_split
from stability.analysis.stats import ERROR, usable_trials

ALPHA = 0.05
Z95 = float(stats.norm.ppf(0.975))
MIN_WILCOXON_POINTS = 6  # below 6 non-zero differences the two-sided exact p is never under 0.05


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (successes may be fractional: ties count one half)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def points_needed(p: float, z: float = Z95, limit: int = 100_000) -> int | None:
    """Roughly how many paired points make the Wilson interval exclude one half at this share
    (None when the share is one half, or more than `limit` would be needed)."""
    if not math.isfinite(p) or p == 0.5:
        return None
    n = 1
    while n <= limit:
        lo, hi = wilson_interval(p * n, n, z)
        if lo > 0.5 or hi < 0.5:
            return n
        n = n + 1 if n < 64 else int(n * 1.1)
    return None


def point_errors(trials: pd.DataFrame) -> pd.DataFrame:
    """Mean usable error per (study, optimizer, epochs, model, point) over the repeats there."""
    usable = usable_trials(trials)
    if "point" not in usable or usable.empty:
        return pd.DataFrame(columns=["study", "optimizer", "epochs", "model", "point", ERROR])
    usable = usable[usable["point"].notna()]
    keys = ["study", "optimizer", "epochs", "model", "point"]
    return usable.groupby(keys, sort=True, dropna=False)[ERROR].mean().reset_index()


def _wilcoxon(diffs: np.ndarray) -> float | None:
    if not np.any(diffs != 0):
        return None
    return float(stats.wilcoxon(diffs, zero_method="wilcox").pvalue)


def decide(lo: float, hi: float, p: float | None) -> str:
    """"a" or "b" when the Wilson interval (lo, hi) excludes one half and p < ALPHA, else "undecided"."""
    significant = p is not None and p < ALPHA
    return "a" if significant and lo > 0.5 else "b" if significant and hi < 0.5 else "undecided"


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment: the i-th smallest of m p-values times (m - i + 1), made
    non-decreasing in that order and capped at 1 (family-wise error control, any dependence)."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = stepped
    return out


def compare(a_err: pd.Series, b_err: pd.Series, a_all: np.ndarray, b_all: np.ndarray) -> dict[str, Any]:
    """The statistics of one pair: errors by point (indexed alike) and all usable errors of each."""
    paired = pd.concat([a_err.rename("a"), b_err.rename("b")], axis=1, join="inner").dropna()
    diffs = (paired["a"] - paired["b"]).to_numpy(float)
    n = len(diffs)
    wins = float(np.sum(diffs < 0) + 0.5 * np.sum(diffs == 0))
    share = wins / n if n else math.nan
    lo, hi = wilson_interval(wins, n)
    wilcoxon_p = _wilcoxon(diffs) if n else None
    ks = stats.ks_2samp(a_all, b_all) if len(a_all) and len(b_all) else None
    return {
        "n_pairs": n, "p_a_better": share, "p_a_better_ci": [lo, hi], "wilcoxon_p": wilcoxon_p,
        "ks_D": float(ks.statistic) if ks is not None else None, "ks_p": float(ks.pvalue) if ks is not None else None,
        "decision": decide(lo, hi, wilcoxon_p), "nonzero_pairs": int(np.sum(diffs != 0)), "a_wins": int(np.sum(diffs < 0)),
        "b_wins": int(np.sum(diffs > 0)), "ties": int(np.sum(diffs == 0)),
        "mean_diff": float(diffs.mean()) if n else None, "points_needed": points_needed(share) if n else None,
    }


def seed_variances(rows: pd.DataFrame, models: list[str]) -> dict[str, float]:
    """Each model's within-point seed variance over its usable trials (`analysis.noise`), for the
    models that ran some point twice or more."""
    out = {}
    for model in models:
        mine = rows[(rows["model"] == model) & rows["point"].notna()] if "point" in rows else rows.iloc[:0]
        split = variance_split(mine[ERROR].to_numpy(float), mine["point"].to_numpy(int)) if len(mine) else None
        if split is not None:
            out[model] = split["seed_sd"] ** 2
    return out


def seed_noise(variances: dict[str, float], models: list[str]) -> float | None:
    """The pooled per-trial seed sd of these models (their seed variances averaged); None when no
    model repeated a point."""
    pooled = [variances[m] for m in models if m in variances]
    return math.sqrt(sum(pooled) / len(pooled)) if pooled else None


def _noise_clause(v: dict[str, Any]) -> str:
    if not v.get("within_seed_noise"):
        return ""
    return (f"; the mean difference ({abs(v['mean_diff']):.2f} points) is smaller than the seed noise "
            f"of one trial ({v['seed_sd']:.2f} points): a reseed could produce it")


def _fmt_p(p: float | None) -> str:
    return "n/a" if p is None else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


def _holm_clause(v: dict[str, Any]) -> str:
    if v.get("wilcoxon_p_holm") is None:
        return ""
    n = v["holm_n"]
    return f", Holm-adjusted over {n} comparison{'s' if n != 1 else ''} p = {_fmt_p(v['wilcoxon_p_holm'])}"


def _fmt_sensitivity(s: dict[str, Any]) -> str:
    lo, hi = s["ci"]
    return f"{s['value']:.1f} [{lo:.1f}, {hi:.1f}]"


def sensitivity_clause(v: dict[str, Any], a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    """Which model is the less sensitive to its learning rate, when the two intervals of
    `analysis.sensitivity` do not overlap; else nothing."""
    if not a or not b or not a.get("ci") or not b.get("ci") or (a["ci"][1] >= b["ci"][0] and b["ci"][1] >= a["ci"][0]):
        return ""
    (calm, s_calm), (other, s_other) = sorted([(v["a"], a), (v["b"], b)], key=lambda x: x[1]["value"])
    return (f"; {calm} is the less sensitive to its learning rate (lr sensitivity {_fmt_sensitivity(s_calm)} "
            f"against {_fmt_sensitivity(s_other)} points)")


def sentence(v: dict[str, Any], sensitivity: str = "") -> str:
    """One line that says the verdict, its numbers and, when undecided, what would decide it;
    `sensitivity`: the clause of `sensitivity_clause`, added at the end."""
    a, b, where = v["a"], v["b"], f"under {v['optimizer']} at {v['epochs']} epochs"
    lo, hi = v["p_a_better_ci"]
    numbers = f"P = {v['p_a_better']:.2f} [{lo:.2f}, {hi:.2f}], Wilcoxon p = {_fmt_p(v['wilcoxon_p'])}{_holm_clause(v)}"
    if v["n_pairs"] == 0:
        return f"{a} vs {b} {where}: no point where both have a usable trial{sensitivity}"
    if v["decision"] != "undecided":
        winner, loser = (a, b) if v["decision"] == "a" else (b, a)
        won = v["a_wins"] if v["decision"] == "a" else v["b_wins"]
        return (f"{winner} beats {loser} {where} on {won} of {v['n_pairs']} points ({numbers}){_noise_clause(v)}"
                f"{sensitivity}")
    ahead = a if v["p_a_better"] > 0.5 else b if v["p_a_better"] < 0.5 else None
    lead = (f"{ahead} better on {v['a_wins'] if ahead == a else v['b_wins']} of {v['n_pairs']} points"
            if ahead else f"even on {v['n_pairs']} points")
    why = ""
    if v["nonzero_pairs"] < MIN_WILCOXON_POINTS:
        why = f"; with {v['nonzero_pairs']} non-zero differences Wilcoxon can never reach p < 0.05"
    more = ""
    if v["points_needed"] and v["points_needed"] > v["n_pairs"]:
        more = f"; about {v['points_needed']} paired points would decide it at this rate"
    return f"{a} vs {b} {where}: undecided, {lead} ({numbers}){why}{more}{_noise_clause(v)}{sensitivity}"


def correct(found: list[dict[str, Any]]) -> None:
    """Holm-adjust the Wilcoxon p-values over each study's verdicts (those with a p-value) and
    decide every verdict on the adjusted p (`wilcoxon_p_holm`, `holm_n`)."""
    for study in dict.fromkeys(v["study"] for v in found):
        tested = [v for v in found if v["study"] == study and v["wilcoxon_p"] is not None]
        for v, p in zip(tested, holm([v["wilcoxon_p"] for v in tested])):
            v["wilcoxon_p_holm"] = float(p)
        for v in found:
            if v["study"] == study:
                v.setdefault("wilcoxon_p_holm", None)
                v["holm_n"] = len(tested)
                v["decision"] = decide(*v["p_a_better_ci"], v["wilcoxon_p_holm"])


def verdicts(trials: pd.DataFrame, sensitivity: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One verdict per pair of models, per study, optimizer and epochs (module docstring);
    `sensitivity`: rows of `analysis.sensitivity.lr_sensitivities` (computed here when None)."""
    from stability.analysis.sensitivity import by_group, lr_sensitivities

    by_point = point_errors(trials)
    usable = usable_trials(trials)
    out = []
    for (study, optimizer, epochs), group in by_point.groupby(["study", "optimizer", "epochs"], sort=True):
        models = sorted(group["model"].unique())
        rows = usable[(usable["study"] == study) & (usable["optimizer"] == optimizer) & (usable["epochs"] == epochs)]
        errors = {m: group[group["model"] == m].set_index("point")[ERROR] for m in models}
        all_errors = {m: rows.loc[rows["model"] == m, ERROR].to_numpy(float) for m in models}
        variances = seed_variances(rows, models)
        for a, b in combinations(models, 2):
            v = {"study": study, "optimizer": optimizer, "epochs": int(epochs), "a": a, "b": b,
                 **compare(errors[a], errors[b], all_errors[a], all_errors[b])}
            v["seed_sd"] = seed_noise(variances, [a, b])
            v["within_seed_noise"] = (v["seed_sd"] is not None and v["mean_diff"] is not None
                                      and abs(v["mean_diff"]) < v["seed_sd"])
            out.append(v)
    correct(out)
    if out:
        lr = by_group(lr_sensitivities(trials) if sensitivity is None else sensitivity)
        for v in out:
            where = (v["study"], v["optimizer"], v["epochs"])
            v["sentence"] = sentence(v, sensitivity_clause(v, lr.get((*where, v["a"])), lr.get((*where, v["b"]))))
    return out
