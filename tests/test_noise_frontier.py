"""Seed variance, the stability frontier and the with-replacement expected best of k, against
hand-computed values and independent computations on frames built here."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit
from sklearn.linear_model import LogisticRegression

from stability.analysis.best_of_k import (
    expected_best_weights_with_replacement,
    expected_best_with_replacement,
)
from stability.analysis.frontier import EVERY_DIVERGED, PENALTY, fit_logistic, stability_frontier
from stability.analysis.noise import seed_variance
from stability.analysis.stats import expected_best

REPO = Path(__file__).resolve().parents[1]


_IDS = itertools.count()
_RNG = np.random.default_rng(12345)  # outcomes that differ between seeds (wall time, loss, ...)


def trial(err, lr=1e-3, wd=0.05, seed=0, status="ok", model="m", optimizer="adamw", epochs=10, study="s", **extra):
    rng = _RNG
    return {"study": study, "trial_id": f"t{next(_IDS)}", "model": model, "optimizer": optimizer,
            "lr": lr, "weight_decay": wd, "epochs": epochs, "seed": seed, "batch_size": 32, "status": status,
            "top1_err": err, "best_top1_err": err, "train_loss": rng.random(), "wall_time_s": rng.random(),
            "images_per_s": 1.0, "params": 10, "gflops": 0.1, "patch_cos_sim": rng.random(), "error": "",
            "patch_cos_sim_layers": list(rng.random(3)), **extra}


def anova_split(errors_per_point: list[list[float]]) -> tuple[float, float]:
    """(seed variance, hyper-parameter variance) of a balanced one-way random-effects ANOVA from
    its mean squares: MSW, (MSB - MSW) / r clipped at 0."""
    e = np.asarray(errors_per_point, dtype=float)
    p, r = e.shape
    means = e.mean(axis=1)
    msw = ((e - means[:, None]) ** 2).sum() / (p * (r - 1))
    msb = r * ((means - e.mean()) ** 2).sum() / (p - 1)
    return msw, max(0.0, (msb - msw) / r)


# --- seed variance ----------------------------------------------------------------------------

def test_seed_variance_of_a_hand_computed_split():
    # points (lr) with errors [10, 12], [20, 22], [30, 32]: within var 2 each, means 11, 21, 31
    rows = [trial(e, lr=lr, seed=s) for lr, errs in ((1e-3, (10, 12)), (2e-3, (20, 22)), (4e-3, (30, 32)))
            for s, e in enumerate(errs)]
    (row,) = seed_variance(pd.DataFrame(rows))
    assert {k: row[k] for k in ("study", "model", "optimizer", "epochs", "repeats", "points")} == \
        {"study": "s", "model": "m", "optimizer": "adamw", "epochs": 10, "repeats": 2, "points": 3}
    assert row["seed_sd"] == pytest.approx(np.sqrt(2.0))
    assert row["hparam_sd"] == pytest.approx(np.sqrt(100.0 - 2.0 / 2))
    assert row["seed_share"] == pytest.approx(2.0 / (2.0 + 99.0))


def test_seed_variance_matches_the_anova_mean_squares_for_paired_models():
    """Two models on the same 12 points (a `point` column), 3 seeds each: the point effect is
    shared, the seed noise differs (sd 0.5 vs 3)."""
    rng = np.random.default_rng(1)
    effects = rng.normal(30, 4, size=12)
    rows, per_model = [], {}
    for model, noise in (("a", 0.5), ("b", 3.0)):
        errs = effects[:, None] + rng.normal(0, noise, size=(12, 3))
        per_model[model] = errs
        for p, lr in enumerate(np.logspace(-4, -2, 12)):
            rows += [trial(errs[p, s], lr=lr, seed=s, model=model, point=p) for s in range(3)]
    found = {r["model"]: r for r in seed_variance(pd.DataFrame(rows))}
    for model, errs in per_model.items():
        seed_var, hparam_var = anova_split(errs.tolist())
        assert found[model]["repeats"] == 3 and found[model]["points"] == 12
        assert found[model]["seed_sd"] == pytest.approx(np.sqrt(seed_var))
        assert found[model]["hparam_sd"] == pytest.approx(np.sqrt(hparam_var))
        assert found[model]["seed_share"] == pytest.approx(seed_var / (seed_var + hparam_var))
    assert found["a"]["seed_share"] < 0.1 < found["b"]["seed_share"]


def test_points_are_told_apart_by_every_knob_and_not_by_outcomes():
    # same lr and wd, two values of an extra knob: two points; outcomes (wall time, loss, layer
    # similarities) differ between seeds and must not split a point
    rows = [trial(e, seed=s, mixup=m) for m, errs in ((0.0, (10, 14)), (0.8, (20, 24))) for s, e in enumerate(errs)]
    (row,) = seed_variance(pd.DataFrame(rows))
    assert (row["repeats"], row["points"]) == (2, 2)
    assert row["seed_sd"] == pytest.approx(np.sqrt(8.0))
    assert row["hparam_sd"] == pytest.approx(np.sqrt(50.0 - 8.0 / 2))
    with_point = seed_variance(pd.DataFrame([{**r, "point": r["mixup"]} for r in rows]))
    assert with_point == [row]


def test_failed_trials_are_left_out_and_diverged_count_at_their_error():
    rows = [trial(10, lr=1e-3, seed=0), trial(12, lr=1e-3, seed=1), trial(None, lr=1e-3, seed=2, status="failed"),
            trial(20, lr=1e-2, seed=0), trial(90, lr=1e-2, seed=1, status="diverged"),
            trial(None, lr=1e-2, seed=2, status="failed")]
    (row,) = seed_variance(pd.DataFrame(rows))
    assert (row["repeats"], row["points"]) == (2, 2)
    seed_var, hparam_var = anova_split([[10, 12], [20, 90]])
    assert row["seed_sd"] == pytest.approx(np.sqrt(seed_var))
    assert row["hparam_sd"] == pytest.approx(np.sqrt(hparam_var))
    # point means closer than seed noise explains: the hyper-parameter part is clipped at 0
    rows = [trial(e, lr=lr, seed=s) for lr, errs in ((1e-3, (10, 14)), (1e-2, (12, 16))) for s, e in enumerate(errs)]
    (row,) = seed_variance(pd.DataFrame(rows))
    assert anova_split([[10, 14], [12, 16]]) == (8.0, 0.0)
    assert (row["seed_sd"], row["hparam_sd"], row["seed_share"]) == (pytest.approx(np.sqrt(8.0)), 0.0, 1.0)


def test_groups_without_repeats_are_left_out_and_a_flat_group_has_no_share():
    rows = [trial(10 + i, lr=10.0 ** -i, seed=0) for i in range(1, 5)]  # one seed per point
    rows += [trial(25.0, lr=lr, seed=s, optimizer="sgd") for lr in (1e-3, 1e-2) for s in range(2)]
    (row,) = seed_variance(pd.DataFrame(rows))
    assert row["optimizer"] == "sgd"
    assert (row["seed_sd"], row["hparam_sd"], row["seed_share"]) == (0.0, 0.0, None)
    assert seed_variance(pd.DataFrame(rows[:4])) == []


# --- stability frontier -----------------------------------------------------------------------

def _lr_sweep(lrs, diverges, model="m", optimizer="adamw"):
    return [trial(90.0 if d else 30.0 + abs(np.log10(lr) + 3), lr=lr, status="diverged" if d else "ok",
                  model=model, optimizer=optimizer) for lr, d in zip(lrs, diverges)]


def test_separated_divergence_puts_the_frontier_between_its_neighbours():
    lrs = np.logspace(-5, 0, 31)
    (row,) = stability_frontier(pd.DataFrame(_lr_sweep(lrs, lrs > 1e-2)), n_boot=100)
    stable_max, diverged_min = lrs[lrs <= 1e-2].max(), lrs[lrs > 1e-2].min()
    assert (row["n"], row["n_diverged"], row["level"]) == (31, int((lrs > 1e-2).sum()), 0.1)
    assert stable_max <= row["max_stable_lr"] <= diverged_min
    lo, hi = row["max_stable_lr_ci"]
    assert lo <= row["max_stable_lr"] <= hi <= diverged_min
    assert row["stable_up_to"] is None and row["note"] is None


def test_noisy_frontier_matches_an_independent_logistic_fit():
    """P(diverged) = expit(3 * (log10 lr + 2)): the 10% lr is 10^(-2 + logit(0.1) / 3); an
    (almost) unpenalised scikit-learn fit on the same trials gives the same crossing."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-4, 0, 600)
    diverged = rng.random(600) < 1 / (1 + np.exp(-3 * (x + 2)))
    (row,) = stability_frontier(pd.DataFrame(_lr_sweep(10 ** x, diverged)), n_boot=30)
    fit = LogisticRegression(C=1e6).fit(x[:, None], diverged)
    independent = (logit(0.1) - fit.intercept_[0]) / fit.coef_[0, 0]
    assert np.log10(row["max_stable_lr"]) == pytest.approx(independent, abs=0.02)
    assert np.log10(row["max_stable_lr"]) == pytest.approx(-2 + logit(0.1) / 3, abs=0.25)
    lo, hi = np.log10(row["max_stable_lr_ci"])
    assert lo < np.log10(row["max_stable_lr"]) < hi and hi - lo < 0.5
    (higher,) = stability_frontier(pd.DataFrame(_lr_sweep(10 ** x, diverged)), level=0.5, n_boot=0)
    assert higher["max_stable_lr"] > row["max_stable_lr"] and higher["max_stable_lr_ci"] is None


@pytest.mark.parametrize("noise", [0.0, 0.5], ids=["separated", "overlapping"])
def test_the_hand_written_fit_is_scikit_learns_penalised_logistic_regression(noise):
    """The frontier's own Newton fit minimises the objective of scikit-learn's L2-penalised
    LogisticRegression (intercept not penalised): the same estimates, separated data included."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=64)
    y = (x + rng.normal(scale=noise, size=64) > 0.5).astype(float)
    ours = fit_logistic(x, y)
    theirs = LogisticRegression(C=1 / PENALTY, tol=1e-12, max_iter=10_000).fit(x[:, None], y)
    assert ours == pytest.approx((theirs.intercept_[0], theirs.coef_[0, 0]), abs=1e-5)


def test_frontier_without_and_with_only_divergence():
    lrs = np.logspace(-4, -1, 8)
    rows = _lr_sweep(lrs, np.zeros(8, bool)) + _lr_sweep(lrs, np.ones(8, bool), optimizer="sgd")
    rows.append(trial(None, lr=1.0, status="failed"))  # failed: no evidence of divergence
    stable, every = stability_frontier(pd.DataFrame(rows), n_boot=10)
    assert stable["optimizer"] == "adamw"
    assert stable["max_stable_lr"] is None and stable["max_stable_lr_ci"] is None
    assert stable["stable_up_to"] == pytest.approx(1e-1) and stable["note"] is None
    assert every["optimizer"] == "sgd" and every["note"] == EVERY_DIVERGED
    assert every["max_stable_lr"] is None and every["stable_up_to"] is None
    assert every["good_lr_decades"] == pytest.approx(3.0)  # all at 90: every lr is "good"


def test_good_lr_decades_spans_the_trials_within_one_point_of_the_best():
    rows = [trial(e, lr=lr) for e, lr in ((20.0, 1e-4), (10.0, 1e-3), (10.9, 1e-1), (11.0, 1.0), (11.2, 3.0))]
    rows.append(trial(None, lr=10.0, status="failed"))
    (row,) = stability_frontier(pd.DataFrame(rows), n_boot=0)
    assert row["good_lr_decades"] == pytest.approx(3.0)  # 1e-3 .. 1 (11.0 = best + 1 counts)


# --- expected best of k, with replacement -----------------------------------------------------

def test_expected_best_with_replacement_matches_enumeration():
    errors = [12.0, 10.0, 15.5, 11.0, 30.0]
    n = len(errors)
    for k in (1, 2, 3, 4, 7):
        if n ** k > 100_000:
            continue
        brute = np.mean([min(draw) for draw in itertools.product(errors, repeat=k)])
        assert expected_best_with_replacement(errors, [k])[k] == pytest.approx(brute)
    assert expected_best_with_replacement(errors, [1])[1] == pytest.approx(np.mean(errors))
    assert expected_best_with_replacement(errors, [500])[500] == pytest.approx(10.0)
    assert list(expected_best_with_replacement(errors)) == [1, 2, 4, 5]
    assert expected_best_with_replacement([], [1]) == {}
    for k in (1, 3, 9):
        assert expected_best_weights_with_replacement(n, k).sum() == pytest.approx(1.0)


def test_with_replacement_lies_above_the_unbiased_estimate():
    errors = np.random.default_rng(3).normal(20, 2, 16)
    biased, unbiased = expected_best_with_replacement(errors), expected_best(errors)
    assert biased[1] == pytest.approx(unbiased[1])
    for k in (2, 4, 8, 16):
        assert biased[k] > unbiased[k]
    assert unbiased[16] == pytest.approx(errors.min())


def test_the_new_modules_load_neither_torch_nor_ray():
    code = ("import sys, stability.analysis.noise, stability.analysis.frontier, stability.analysis.best_of_k, "
            "stability.analysis.edges, stability.analysis.importance; bad = [m for m in ('torch', 'ray') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
