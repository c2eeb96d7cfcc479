"""Stability frontier: the learning rate above which trials start to diverge (Tuning
Playbook, "a stability problem caps the usable lr"; docs/architecture.md, "Background").

Per (study, model, optimizer, epochs) group, a logistic fit of P(diverged) on log10(lr) gives
the lr where the probability reaches `level`, with a percentile bootstrap interval over trials.
Separated data (every trial above some lr diverged, none below) are the usual case, where the
maximum-likelihood slope is infinite: the slope gets a weak L2 penalty, and the answer is
clamped to the gap between the largest stable and the smallest diverged lr (to the sampled lr
range when the classes overlap). Failed trials are left out.

Why the fit is hand-written: it is scikit-learn's L2-penalised LogisticRegression objective (a test
checks the estimates agree), but the report fits it 201 times per group and scikit-learn's fit costs
far more per call on 64 points (`python -m benchmarks.frontier_fit`, docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, log_expit, logit

from stability.analysis.stats import _EPS, ERROR, GROUP_KEYS, iter_groups, usable_trials

PENALTY = 0.01  # L2 weight on the slope of standardised log10(lr): weak, it only bounds separated fits
LEVEL = 0.1
NEAR_BEST = 1.0  # points of error: the "good" lr range of good_lr_decades
EVERY_DIVERGED = "every trial diverged"
NOT_RISING = "divergence does not rise with lr"
ONE_LR = "a single lr sampled"


def fit_logistic(x: np.ndarray, y: np.ndarray, penalty: float = PENALTY) -> tuple[float, float]:
    """(intercept, slope) of P(y=1) = expit(a + b * x), the slope L2-penalised (the intercept
    not), by damped Newton steps on the (convex) penalised log-loss; x should be standardised."""
    s = 2.0 * y - 1.0

    def loss(a, b):
        return -np.sum(log_expit(s * (a + b * x))) + 0.5 * penalty * b * b

    a, b = float(logit(np.clip(y.mean(), 1e-3, 1 - 1e-3))), 0.0
    current = loss(a, b)
    for _ in range(200):
        p = expit(a + b * x)
        w = p * (1 - p)
        ga, gb = np.sum(p - y), np.sum((p - y) * x) + penalty * b
        haa, hab, hbb = np.sum(w) + 1e-12, np.sum(w * x), np.sum(w * x * x) + penalty
        det = haa * hbb - hab * hab
        da, db = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
        t = 1.0
        while t > 1e-12:  # backtrack until the loss falls enough (Armijo)
            trial = loss(a - t * da, b - t * db)
            if trial <= current - 1e-4 * t * (ga * da + gb * db):
                break
            t /= 2
        a, b, current = a - t * da, b - t * db, trial
        if max(abs(t * da), abs(t * db)) < 1e-10:
            break
    return float(a), float(b)


def crossing(log_lr: np.ndarray, diverged: np.ndarray, level: float = LEVEL,
             penalty: float = PENALTY) -> tuple[float | None, str | None]:
    """(log10 lr where the fitted P(diverged) reaches `level`, None) or (None, why not).
    Needs both outcomes present."""
    x, y = np.asarray(log_lr, float), np.asarray(diverged, float)
    sd = x.std()
    if sd == 0:
        return None, ONE_LR
    mu = x.mean()
    a, b = fit_logistic((x - mu) / sd, y, penalty)
    if b <= 0:
        return None, NOT_RISING
    found = mu + sd * (logit(level) - a) / b
    stable_max, diverged_min = x[y == 0].max(), x[y == 1].min()
    lo, hi = (stable_max, diverged_min) if stable_max < diverged_min else (x.min(), x.max())
    return float(np.clip(found, lo, hi)), None


def good_lr_decades(lr: np.ndarray, errors: np.ndarray, delta: float = NEAR_BEST) -> float | None:
    """Width in decades (log10 max - log10 min) of the lrs of the runs within `delta` points of
    the best run; None without a run with a positive lr."""
    lr, e = np.asarray(lr, float), np.asarray(errors, float)
    keep = np.isfinite(lr) & (lr > 0) & np.isfinite(e)
    if not keep.any():
        return None
    lr, e = lr[keep], e[keep]
    good = lr[e <= e.min() + delta + _EPS]
    return float(np.log10(good.max()) - np.log10(good.min()))


def _frontier(rows: pd.DataFrame, level: float, n_boot: int, seed: int, ci_level: float) -> dict[str, Any]:
    lr = rows["lr"].to_numpy(float)
    keep = np.isfinite(lr) & (lr > 0)
    x = np.log10(lr[keep])
    y = (rows["status"].astype(str).to_numpy() == "diverged")[keep].astype(float)
    out: dict[str, Any] = {"n": int(keep.sum()), "n_diverged": int(y.sum()), "level": level, "max_stable_lr": None,
                           "max_stable_lr_ci": None, "stable_up_to": None, "note": None}
    if len(x) == 0:
        out["note"] = "no trial with a positive lr"
        return out
    if y.sum() == 0:
        out["stable_up_to"] = float(10 ** x.max())
        return out
    if y.sum() == len(y):
        out["note"] = EVERY_DIVERGED
        return out
    found, why = crossing(x, y, level)
    if found is None:
        out["note"] = why
        return out
    out["max_stable_lr"] = float(10 ** found)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), len(x))
        yb = y[idx]
        if 0 < yb.sum() < len(yb):  # a resample without both outcomes has no crossing
            value, _ = crossing(x[idx], yb, level)
            if value is not None:
                boots.append(value)
    if len(boots) >= max(2, n_boot // 2):
        tail = 100 * (1 - ci_level) / 2
        lo, hi = np.percentile(boots, [tail, 100 - tail])
        out["max_stable_lr_ci"] = [float(10 ** lo), float(10 ** hi)]
    return out


def stability_frontier(trials: pd.DataFrame, level: float = LEVEL, n_boot: int = 200, seed: int = 0,
                       ci_level: float = 0.95) -> list[dict[str, Any]]:
    """Per (study, model, optimizer, epochs) group: {study, model, optimizer, epochs, n,
    n_diverged, level, max_stable_lr, max_stable_lr_ci, stable_up_to, note, good_lr_decades}.

    max_stable_lr: the lr at which the penalised logistic fit of P(diverged) on log10(lr)
    reaches `level` (between the largest stable and the smallest diverged lr when they are
    separated); max_stable_lr_ci: its percentile bootstrap interval over trials ([lo, hi], None
    when under half the resamples hold both outcomes). No trial diverged: max_stable_lr None and
    stable_up_to the largest lr sampled. Every trial diverged: both None, note "every trial
    diverged". good_lr_decades: see `good_lr_decades` (usable trials, 1 point of the best)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    usable = usable_trials(trials)
    rows = []
    for key, g in iter_groups(usable, GROUP_KEYS):
        row = {**key, **_frontier(g, level, n_boot, seed, ci_level)}
        row["good_lr_decades"] = good_lr_decades(g["lr"].to_numpy(float), g[ERROR].to_numpy(float))
        rows.append(row)
    return rows
