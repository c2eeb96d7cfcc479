"""Exact simultaneous confidence bands for the error EDF and the tuning curve (docs/architecture.md, "Background").

Lourie, Cho and He (2024, "Show Your Work with Confidence: Confidence Bands for Tuning Curves")
give distribution-free bands that hold simultaneously over all errors at any sample size, where
bootstrap bands miss their coverage at the 64 samples a study runs; `opda` implements them.
`opda.nonparametric.EmpiricalDistribution.confidence_bands` turns a group's errors into a lower
and an upper CDF; each gives a bound of the tuning curve, the median best error after k trials
(the upper CDF band, more mass at low errors, gives the lower curve).

Methods: the Learned-Miller-DeStefano equal-tailed band (`ld_equal_tailed`: exact, tighter in
the tails) assumes a continuous distribution; a group with tied errors (diverged trials all sit at
chance error; a small validation set makes errors coarse) gets the Dvoretzky-Kiefer-Wolfowitz band
(`dkw`: conservative, valid with ties). Every row says which. The support is [0, 100] (top-1
error in percent), so the bands stay finite: where a curve's band reaches 0 or 100 it says
nothing, and `informative_k` is the largest k before that (Lourie et al.'s rule of thumb: about
n / 6.25 at 80% confidence). A group with fewer than 2 usable trials gets no band (`note` says so).
The ld band's critical value is simulated (opda caches it per n): it is seeded (`seed`), so a
report is reproducible.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from stability.analysis.stats import ERROR, iter_groups, usable_trials

CONFIDENCE = 0.95
CONTINUOUS = "ld_equal_tailed"
TIES = "dkw"
METHOD_NAMES = {CONTINUOUS: "Learned-Miller-DeStefano equal-tailed", TIES: "Dvoretzky-Kiefer-Wolfowitz"}
SUPPORT = (0.0, 100.0)
SAMPLES_PER_K = 6.25  # Lourie et al.: about this many samples per reported search iteration, at 80% confidence
TOO_FEW = "fewer than 2 usable trials: no band"
BAND_KEYS = ("study", "optimizer", "epochs", "model")


def band_method(errors: Sequence[float]) -> str:
    """`dkw` when some errors tie, else `ld_equal_tailed`."""
    e = np.asarray(errors, dtype=float)
    return TIES if len(np.unique(e)) < len(e) else CONTINUOUS


@functools.lru_cache(maxsize=64)
def _generator(n: int, confidence: float, method: str, seed: int) -> np.random.Generator:
    """One generator per (n, confidence, method, seed): opda caches the band weights by these and
    the generator, so every group of n errors gets the weights a fresh default_rng(seed) gives."""
    return np.random.default_rng(seed)


@functools.lru_cache(maxsize=512)
def _bands(values: tuple[float, ...], confidence: float, method: str, seed: int, a: float, b: float):
    from opda.nonparametric import EmpiricalDistribution

    return EmpiricalDistribution.confidence_bands(np.asarray(values), confidence, a=a, b=b, method=method,
                                                  generator=_generator(len(values), confidence, method, seed), n_jobs=1)


def confidence_bands(errors: Sequence[float], confidence: float = CONFIDENCE, seed: int = 0,
                     method: str | None = None):
    """(lower, point, upper) opda distributions of these errors' CDF (None below two errors);
    `method` defaults to `band_method`."""
    e = np.sort(np.asarray(errors, dtype=float))
    if len(e) < 2:
        return None
    a, b = min(SUPPORT[0], float(e[0])), max(SUPPORT[1], float(e[-1]))
    return _bands(tuple(e.tolist()), float(confidence), method or band_method(e), int(seed), a, b)


def edf_band(errors: Sequence[float], confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, Any]:
    """{n, method, confidence, error (the distinct errors ascending), lower, upper (the CDF's band
    at those errors)}; below two errors no band and a `note`."""
    e = np.asarray(errors, dtype=float)
    bands = confidence_bands(e, confidence, seed)
    if bands is None:
        return {"n": len(e), "method": None, "confidence": confidence, "error": [], "lower": [], "upper": [],
                "note": TOO_FEW}
    lo, _, hi = bands
    x = np.unique(e)
    return {"n": len(e), "method": band_method(e), "confidence": confidence, "error": x, "lower": lo.cdf(x),
            "upper": hi.cdf(x)}


def tuning_curve(errors: Sequence[float], confidence: float = CONFIDENCE, seed: int = 0, q: float = 0.5) -> dict[str, Any]:
    """{n, k (1..n), median (the q-quantile of the best error of k trials, from the EDF), lower,
    upper (its simultaneous band), method, confidence, informative_k}; below two errors the
    curve without a band and a `note`."""
    e = np.asarray(errors, dtype=float)
    ks = np.arange(1, len(e) + 1)
    bands = confidence_bands(e, confidence, seed)
    if bands is None:
        median = [float(e[0])] * len(e)
        return {"n": len(e), "k": ks, "median": median, "lower": [], "upper": [], "method": None,
                "confidence": confidence, "informative_k": None, "note": TOO_FEW}
    lo, point, hi = bands
    lower = hi.quantile_tuning_curve(ks, q=q, minimize=True)
    upper = lo.quantile_tuning_curve(ks, q=q, minimize=True)
    inside = (lower > lo.a) & (upper < lo.b)
    leading = len(ks) if inside.all() else int(np.argmin(inside))  # the k = 1, 2, ... whose band says something
    return {"n": len(e), "k": ks, "median": point.quantile_tuning_curve(ks, q=q, minimize=True), "lower": lower,
            "upper": upper, "method": band_method(e), "confidence": confidence, "informative_k": leading or None}


def _per_group(trials: pd.DataFrame, compute) -> list[dict[str, Any]]:
    usable = usable_trials(trials)
    return [{**key, **compute(g[ERROR].to_numpy(float))} for key, g in iter_groups(usable, list(BAND_KEYS))]


def edf_bands(trials: pd.DataFrame, confidence: float = CONFIDENCE, seed: int = 0) -> list[dict[str, Any]]:
    """`edf_band` per study, optimizer, epochs and model (usable trials)."""
    return _per_group(trials, lambda e: edf_band(e, confidence, seed))


def tuning_curves(trials: pd.DataFrame, confidence: float = CONFIDENCE, seed: int = 0) -> list[dict[str, Any]]:
    """`tuning_curve` per study, optimizer, epochs and model (usable trials)."""
    return _per_group(trials, lambda e: tuning_curve(e, confidence, seed))
