"""Empirical distribution functions of errors (docs/architecture.md, "Background").

F(e) = (weighted) share of runs with error <= e. The absolute EDF, the delta-to-best EDF
(e - min e, the paper's figures) and the normalised EDF (weights that make every bin of a
nuisance covariate such as GFLOPs count equally, Radosavovic et al. 2019). scipy's
`stats.ecdf` takes no weights, so the weighted step function is written here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stability.analysis.stats import bootstrap_interval


def edf(values: Sequence[float], weights: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(x, F): the distinct values ascending and the weighted share of runs <= each; F[-1] == 1."""
    v = np.asarray(values, dtype=float)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=float)
    if v.shape != w.shape:
        raise ValueError(f"values and weights differ in shape: {v.shape} vs {w.shape}")
    if len(v) == 0:
        return np.empty(0), np.empty(0)
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    x, inverse = np.unique(v, return_inverse=True)
    mass = np.bincount(inverse.ravel(), weights=w, minlength=len(x))
    y = np.cumsum(mass) / mass.sum()
    y[-1] = 1.0  # exact end despite rounding
    return x, y


def edf_at(values: Sequence[float], grid: Sequence[float], weights: Sequence[float] | None = None) -> np.ndarray:
    """F evaluated at each grid point (0 left of the smallest value)."""
    x, y = edf(values, weights)
    g = np.asarray(grid, dtype=float)
    if len(x) == 0:
        return np.zeros_like(g)
    idx = np.searchsorted(x, g, side="right")
    return np.where(idx > 0, y[np.maximum(idx - 1, 0)], 0.0)


def delta_to_best(values: Sequence[float]) -> np.ndarray:
    """Errors minus the best (smallest) error of the same runs."""
    v = np.asarray(values, dtype=float)
    return v - v.min() if len(v) else v


def normalized_weights(covariate: Sequence[float], bins: int | Sequence[float] = 10, log: bool = True) -> np.ndarray:
    """w_i = 1 / (k * c_bin(i)): each of the k non-empty bins of the covariate gets weight 1/k,
    shared by its c runs. Equal-width bins (in log space when `log` and the values are positive)."""
    c = np.asarray(covariate, dtype=float)
    if len(c) == 0:
        return np.empty(0)
    use_log = log and bool(np.all(c > 0))
    scaled = np.log(c) if use_log else c
    if isinstance(bins, (int, np.integer)):
        if np.ptp(scaled) == 0:
            return np.full(len(c), 1.0 / len(c))
        edges = np.histogram_bin_edges(scaled, bins=int(bins))
    else:
        edges = np.log(np.asarray(bins, float)) if use_log else np.asarray(bins, float)
    which = np.clip(np.searchsorted(edges, scaled, side="right") - 1, 0, len(edges) - 2)
    _, inverse, counts = np.unique(which, return_inverse=True, return_counts=True)
    return 1.0 / (len(counts) * counts[inverse.ravel()])


def edf_grid(*samples: Sequence[float], points: int = 200) -> np.ndarray:
    """A shared evaluation grid spanning all samples (their values included exactly)."""
    values = np.concatenate([np.asarray(s, dtype=float) for s in samples]) if samples else np.empty(0)
    if len(values) == 0:
        return np.empty(0)
    lo, hi = values.min(), values.max()
    return np.unique(np.concatenate([np.linspace(lo, hi, points), values]))


def edf_band(values: Sequence[float], grid: Sequence[float], *, delta: bool = False, n_boot: int = 200, seed: int = 0,
             level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile bootstrap band of the EDF on `grid`; with `delta`, each resample is
    measured from its own best run."""
    g = np.asarray(grid, dtype=float)
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        f = edf_at(delta_to_best(v) if delta else v, g)
        return f, f.copy()

    def statistic(x, axis=-1):
        x = np.sort(np.moveaxis(x, axis, -1), axis=-1)
        if delta:
            x = x - x[..., :1]
        rows = x.reshape(-1, x.shape[-1])
        f = np.stack([np.searchsorted(r, g + 1e-12, side="right") for r in rows]) / x.shape[-1]
        return np.moveaxis(f.reshape(*x.shape[:-1], len(g)), -1, 0)

    return bootstrap_interval(v, statistic, n_boot, seed, level, size=len(g))
