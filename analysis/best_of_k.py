"""Expected best of k trials, the lower-variance estimator (docs/architecture.md, "Background").

`analysis.stats.expected_best` is the unbiased estimator: k trials drawn without replacement
from the N run (Tang et al. 2020). Dodge et al. 2021 (Findings of EMNLP, "Expected Validation
Performance and Estimation of a Random Variable's Maximum") find that drawing with replacement
from the empirical distribution gives a biased estimator of lower variance, which makes fewer
wrong A-vs-B calls. Errors are minimised, so "best" is the minimum.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from stability.analysis.stats import default_ks

UNBIASED = "unbiased"  # `analysis.stats.expected_best`: the report's tables, `--json` and solid curves
LOW_VARIANCE = "low_variance"  # `expected_best_with_replacement`: offered beside it
ESTIMATORS = {UNBIASED: "unbiased estimator (k of the n trials drawn without replacement, Tang et al. 2020)",
              LOW_VARIANCE: "lower-variance estimator (drawn with replacement, Dodge et al. 2021)"}


def expected_best_weights_with_replacement(n: int, k: int) -> np.ndarray:
    """Probability that the i-th smallest of n values is the minimum of k draws with
    replacement: ((n-i+1)/n)^k - ((n-i)/n)^k for i = 1..n (the weights sum to 1)."""
    if n < 1 or k < 1:
        raise ValueError(f"n and k must be at least 1, got n={n}, k={k}")
    i = np.arange(1, n + 1)
    return ((n - i + 1) / n) ** k - ((n - i) / n) ** k


def expected_best_with_replacement(errors: Sequence[float], ks: Iterable[int] | None = None) -> dict[int, float]:
    """Expected minimum error of k trials drawn with replacement from `errors`, per k
    (default: default_ks(n)); k may exceed n. Empty input gives {}."""
    e = np.sort(np.asarray(errors, dtype=float))
    n = len(e)
    if n == 0:
        return {}
    return {int(k): float(e @ expected_best_weights_with_replacement(n, int(k)))
            for k in (default_ks(n) if ks is None else ks)}
