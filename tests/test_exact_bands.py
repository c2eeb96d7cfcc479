"""Exact EDF bands and tuning curves (`analysis.bands`) against opda's own, on data built here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from opda.nonparametric import EmpiricalDistribution

import stability.analysis as an
from stability.analysis.bands import TOO_FEW, edf_band, edf_bands, tuning_curve, tuning_curves


def opda_bands(ys, method: str, seed: int = 0):
    """opda called directly, as its documentation shows: support [0, 100], a fresh seeded generator."""
    return EmpiricalDistribution.confidence_bands(np.asarray(ys), 0.95, a=0.0, b=100.0, method=method,
                                                  generator=np.random.default_rng(seed))


CONTINUOUS = list(np.random.default_rng(1).uniform(10, 40, 24))
TIED = CONTINUOUS[:18] + [90.0] * 6  # six diverged trials at chance error


@pytest.mark.parametrize("ys,method", [(CONTINUOUS, "ld_equal_tailed"), (TIED, "dkw")], ids=["continuous", "ties"])
def test_edf_band_and_tuning_curve_equal_opda(ys, method):
    band = edf_band(ys)
    lo, point, hi = opda_bands(ys, method)
    x = np.unique(ys)
    assert band["method"] == method and band["confidence"] == 0.95 and band["n"] == len(ys)
    assert np.array_equal(band["error"], x)
    assert band["lower"] == pytest.approx(lo.cdf(x), abs=1e-12) and band["upper"] == pytest.approx(hi.cdf(x), abs=1e-12)
    f = an.edf_at(ys, x)
    assert np.all(band["lower"] <= f + 1e-12) and np.all(f <= band["upper"] + 1e-12)  # the EDF lies in its band
    curve = tuning_curve(ys)
    ks = np.arange(1, len(ys) + 1)
    assert list(curve["k"]) == list(ks) and curve["method"] == method
    assert curve["median"] == pytest.approx(point.quantile_tuning_curve(ks, q=0.5, minimize=True))
    assert curve["lower"] == pytest.approx(hi.quantile_tuning_curve(ks, q=0.5, minimize=True))
    assert curve["upper"] == pytest.approx(lo.quantile_tuning_curve(ks, q=0.5, minimize=True))
    assert np.all(curve["lower"] <= curve["median"]) and np.all(curve["median"] <= curve["upper"])
    k = curve["informative_k"]  # the band stays inside the support up to k, and not at k + 1
    assert 1 <= k < len(ys)
    assert np.all(curve["lower"][:k] > 0) and np.all(curve["upper"][:k] < 100)
    assert curve["lower"][k] <= 0 or curve["upper"][k] >= 100


def test_bands_are_reproducible_whatever_came_before():
    first = edf_band(CONTINUOUS, seed=3)
    edf_band(list(np.random.default_rng(9).uniform(0, 50, len(CONTINUOUS))), seed=3)  # another group of the same n
    again = edf_band(CONTINUOUS, seed=3)
    assert np.array_equal(first["lower"], again["lower"]) and np.array_equal(first["upper"], again["upper"])
    lo, _, hi = opda_bands(CONTINUOUS, "ld_equal_tailed", seed=3)
    assert again["upper"] == pytest.approx(hi.cdf(np.unique(CONTINUOUS)), abs=1e-12)


def test_a_group_too_small_for_a_band_says_so():
    frame = pd.DataFrame([{"study": "s", "trial_id": f"{m}-{i}", "model": m, "optimizer": "adamw", "epochs": 5,
                           "status": "ok", "top1_err": e} for m, errs in (("one", [12.0]), ("two", [12.0, 15.0]))
                          for i, e in enumerate(errs)])
    bands = {b["model"]: b for b in edf_bands(frame)}
    curves = {c["model"]: c for c in tuning_curves(frame)}
    assert bands["one"]["method"] is None and bands["one"]["note"] == TOO_FEW and bands["one"]["error"] == []
    assert curves["one"]["method"] is None and curves["one"]["note"] == TOO_FEW and list(curves["one"]["k"]) == [1]
    assert bands["two"]["method"] == "ld_equal_tailed" and "note" not in curves["two"]
    edf = an.edf_data(frame, "adamw", 5)
    assert [line.lo is None for line in edf.lines] == [True, False] and "1 with fewer than 2 trials" in edf.subtitle
    curve = an.tuning_curve_data(frame, "adamw", 5)
    medians = [line for line in curve.lines if not line.group]
    assert [line.lo is None for line in medians] == [True, True]  # two trials: a band, but it says nothing yet
    assert "1 with fewer than 2 trials have none" in curve.subtitle
