"""The stability frontier's logistic fit: the hand-written penalised Newton fit against
scikit-learn's `LogisticRegression` (the same L2-penalised objective), side by side.

    python -m benchmarks.frontier_fit [--points 64] [--fits 200]

The report fits it once per group plus 200 bootstrap resamples: a 9-model study has 36 groups,
7,236 fits. Prints both ways' milliseconds per fit, the largest difference of their estimates and
the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from stability.analysis.frontier import PENALTY, fit_logistic


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.frontier_fit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=64, help="trials per group (default 64, the paper's)")
    p.add_argument("--fits", type=int, default=200, help="fits timed each way (default 200)")
    args = p.parse_args(argv)
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    cases = []
    for i in range(args.fits):
        x = rng.normal(size=args.points)
        noise = 0.0 if i % 2 else 0.5  # half separated (the usual case), half overlapping
        cases.append((x, (x + rng.normal(scale=noise, size=args.points) > 0.8).astype(float)))
    start = time.perf_counter()
    ours = [fit_logistic(x, y) for x, y in cases]
    hand = (time.perf_counter() - start) / len(cases)
    start = time.perf_counter()
    theirs = []
    for x, y in cases:
        model = LogisticRegression(C=1 / PENALTY, tol=1e-10, max_iter=1000).fit(x[:, None], y)
        theirs.append((float(model.intercept_[0]), float(model.coef_[0, 0])))
    library = (time.perf_counter() - start) / len(cases)
    diff = max(abs(a - c) + abs(b - d) for (a, b), (c, d) in zip(ours, theirs))
    print(f"hand-written Newton: {hand * 1e3:.2f} ms per fit; scikit-learn: {library * 1e3:.2f} ms per fit; "
          f"largest difference of (intercept, slope): {diff:.2e}")
    print(f"ratio scikit-learn / hand-written time per fit: {library / hand:.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
