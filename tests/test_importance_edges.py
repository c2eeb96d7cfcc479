"""Edge-of-the-box warnings and hyper-parameter importance, on frames built here with known
answers: a best trial placed at an edge, a knob that alone decides the error."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest

from stability.analysis.edges import edge_of, edge_warnings
from stability.analysis.importance import FLAT, TOO_FEW, distribution, evaluate, frozen_trials, importance, quiet_optuna


def trial(err, lr=1e-3, wd=0.05, status="ok", model="m", optimizer="adamw", epochs=10, study="s", seed=0, **extra):
    return {"study": study, "trial_id": f"{model}-{optimizer}-{lr}-{wd}-{err}-{extra}", "model": model,
            "optimizer": optimizer, "lr": lr, "weight_decay": wd, "epochs": epochs, "seed": seed, "batch_size": 32,
            "status": status, "top1_err": err, "best_top1_err": err, "error": "", **extra}


def knob(column, kind, values, model="m", optimizer="adamw"):
    return {"column": column, "path": f"x.{column}", "model": model, "optimizer": optimizer, "kind": kind,
            "values": values}


KNOBS = [knob("lr", "log_uniform", [1e-5, 1e-1]), knob("weight_decay", "uniform", [0.0, 0.1]),
         knob("mixup", "choice", [0.0, 0.8]), knob("warmup", "int_uniform", [0, 20])]


# --- edges ------------------------------------------------------------------------------------

def test_edge_position_is_taken_in_log_space_for_log_uniform_knobs():
    lr = knob("lr", "log_uniform", [1e-5, 1e-1])
    assert edge_of(2e-5, lr) == "low"  # log10 position 0.3 / 4 decades = 0.075
    assert edge_of(1e-2, lr) is None  # 0.75 in log space (0.0999 of the linear range)
    assert edge_of(1e-2, {**lr, "kind": "uniform"}) == "low"
    assert edge_of(8e-2, lr) == "high"  # 1 - log10(1.25) / 4 = 0.976
    warmup = knob("warmup", "int_uniform", [1, 21])
    assert edge_of(3, warmup) == "low" and edge_of(4, warmup) is None  # 2/20 = 0.1 counts, 3/20 does not
    assert edge_of(19, warmup) == "high" and edge_of(18, warmup) is None
    assert edge_of(0.8, knob("mixup", "choice", [0.0, 0.8])) is None


def test_edge_warnings_name_the_group_knob_and_side():
    rows = [trial(20.0, lr=1e-3, wd=0.05, mixup=0.0, warmup=10),
            trial(12.0, lr=2e-5, wd=0.095, mixup=0.8, warmup=10),  # best of (m, adamw): lr low, wd high
            trial(5.0, lr=1e-1, wd=0.0, status="failed", mixup=0.0, warmup=0),  # failed: not the best
            trial(30.0, lr=1e-3, wd=0.05, optimizer="sgd", mixup=0.0, warmup=19),  # sgd has no knob records
            trial(15.0, lr=1e-3, wd=0.0, model="n", mixup=0.0, warmup=10)]  # n: only its own wd record
    knobs = KNOBS + [knob("weight_decay", "uniform", [0.0, 1.0], model="n")]
    found = edge_warnings(pd.DataFrame(rows), knobs)
    assert [(w["model"], w["optimizer"], w["knob"], w["edge"]) for w in found] == [
        ("m", "adamw", "lr", "low"), ("m", "adamw", "weight_decay", "high"), ("n", "adamw", "weight_decay", "low")]
    assert found[0] | {"value": None} == {"study": "s", "model": "m", "optimizer": "adamw", "epochs": 10, "knob": "lr",
                                        "edge": "low", "value": None, "range": [1e-5, 1e-1]}
    assert found[0]["value"] == pytest.approx(2e-5)


def test_a_best_trial_inside_the_box_gives_no_warning():
    rows = [trial(10.0, lr=1e-3, wd=0.05, mixup=0.0, warmup=10), trial(11.0, lr=1e-5, wd=0.1, mixup=0.8, warmup=0)]
    assert edge_warnings(pd.DataFrame(rows), KNOBS) == []
    assert edge_warnings(pd.DataFrame(rows), []) == []


# --- importance -------------------------------------------------------------------------------

def _decided_by_lr(n=128, seed=0):
    """The error depends on lr alone (a V in log10 lr); weight decay, mixup and warmup are noise."""
    rng = np.random.default_rng(seed)
    lr = 10 ** rng.uniform(-5, -1, n)
    rows = [trial(30 + 10 * abs(np.log10(lr[i]) + 3), lr=lr[i], wd=rng.uniform(0, 0.1),
                  mixup=float(rng.choice([0.0, 0.8])), warmup=float(rng.integers(0, 21))) for i in range(n)]
    return pd.DataFrame(rows)


def test_ped_anova_finds_the_knob_that_alone_decides_the_error():
    (row,) = importance(_decided_by_lr(), KNOBS, n_boot=20)
    assert {k: row[k] for k in ("study", "model", "optimizer", "epochs", "method", "n", "note")} == \
        {"study": "s", "model": "m", "optimizer": "adamw", "epochs": 10, "method": "ped_anova", "n": 128, "note": None}
    knobs = row["knobs"]
    assert set(knobs) == {"lr", "weight_decay", "mixup", "warmup"}
    assert sum(k["importance"] for k in knobs.values()) == pytest.approx(1.0)
    assert knobs["lr"]["importance"] > 0.85
    for name in ("weight_decay", "mixup", "warmup"):
        assert knobs[name]["importance"] < 0.1
    for k in knobs.values():
        lo, hi = k["ci"]
        assert 0.0 <= lo <= hi <= 1.0
    assert knobs["lr"]["ci"][0] > max(knobs[n]["ci"][1] for n in ("weight_decay", "mixup", "warmup"))


def test_fanova_agrees_and_a_categorical_knob_can_decide():
    (row,) = importance(_decided_by_lr(n=64), KNOBS, method="fanova", n_boot=3)
    assert row["method"] == "fanova"
    assert row["knobs"]["lr"]["importance"] > 0.85 and row["knobs"]["weight_decay"]["importance"] < 0.1
    rng = np.random.default_rng(1)
    rows = [trial(10.0 + 20 * (m == 0.8) + rng.normal(0, 0.1), lr=10 ** rng.uniform(-5, -1), mixup=m)
            for m in (0.0, 0.8) * 40]
    (row,) = importance(pd.DataFrame(rows), KNOBS[:1] + KNOBS[2:3], n_boot=5)
    assert row["knobs"]["mixup"]["importance"] > 0.85
    assert row["knobs"]["lr"]["importance"] < 0.15


def test_importance_is_bootstrapped_reproducibly_and_leaves_optuna_quiet():
    trials = _decided_by_lr(n=40)
    verbosity = optuna.logging.get_verbosity()
    first = importance(trials, KNOBS, n_boot=5, seed=3)
    assert importance(trials, KNOBS, n_boot=5, seed=3) == first
    assert optuna.logging.get_verbosity() == verbosity


def test_small_groups_failed_trials_and_unknown_methods():
    rows = [trial(10.0 + i, lr=10.0 ** -(i + 1), mixup=0.0, warmup=1.0) for i in range(4)]
    rows += [trial(None, lr=1e-2, status="failed", mixup=0.0, warmup=1.0)] * 3
    rows += [trial(10.0, optimizer="sgd", mixup=0.0, warmup=1.0)] * 8  # no sgd records: left out
    (row,) = importance(pd.DataFrame(rows), KNOBS, n_boot=2)
    assert (row["n"], row["note"]) == (4, TOO_FEW)
    assert all(k == {"importance": None, "ci": None} for k in row["knobs"].values())
    with pytest.raises(ValueError, match="method"):
        importance(pd.DataFrame(rows), KNOBS, method="shap")


def test_flat_errors_have_no_importance_and_unset_knobs_are_left_out():
    trials = _decided_by_lr(n=30)
    (flat,) = importance(trials.assign(top1_err=20.0), KNOBS, n_boot=2)
    assert flat["note"] == FLAT and flat["knobs"]["lr"] == {"importance": None, "ci": None}
    (row,) = importance(trials.assign(mixup=np.nan), KNOBS, n_boot=2)
    assert set(row["knobs"]) == {"lr", "weight_decay", "warmup"}
    assert sum(k["importance"] for k in row["knobs"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["ped_anova", "fanova"])
def test_the_bootstrap_s_trial_view_gives_what_an_optuna_study_of_the_same_trials_gives(method):
    """The bootstrap evaluates its resamples (trials drawn with repeats) on a light view instead of an
    Optuna study built with `add_trials`: the importances must be the same, to the last bit."""
    rng = np.random.default_rng(7)
    frame = _decided_by_lr(n=48).assign(mixup=rng.choice([0.0, 0.8], 48), warmup=rng.integers(0, 21, 48).astype(float))
    frame.loc[frame.index[::5], "warmup"] = np.nan  # a knob some trials do not set
    dists = {k["column"]: distribution(k) for k in KNOBS}
    trials = frozen_trials(frame, dists)
    for draw in range(3):
        resample = [trials[i] for i in rng.integers(0, len(trials), len(trials))]
        study = optuna.create_study(direction="minimize")
        with quiet_optuna():
            study.add_trials(resample)
            assert evaluate(resample, list(dists), method, seed=draw) == \
                evaluate(resample, list(dists), method, seed=draw, study=study)

