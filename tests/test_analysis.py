"""The analysis package: statistics against hand-computed values, KS against scipy, EDF
properties, figure data, and the layer rule (no torch, no ray)."""

from __future__ import annotations

import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import stability.analysis as an
from stability.analysis.figures import LR_WD

REPO = Path(__file__).resolve().parents[1]


def trial(model="m", optimizer="adamw", err=10.0, status="ok", epochs=10, lr=1e-3, wd=0.1, study="s", tid=None, **extra):
    return {"study": study, "trial_id": tid or f"{model}-{optimizer}-{err}-{lr}-{epochs}", "model": model,
            "optimizer": optimizer, "lr": lr, "weight_decay": wd, "epochs": epochs, "seed": 0, "batch_size": 32,
            "status": status, "top1_err": err, "best_top1_err": err, "train_loss": 1.0, "wall_time_s": 1.0,
            "images_per_s": 1.0, "params": 10, "gflops": 0.1, "patch_cos_sim": 0.2, "error": "", **extra}


@pytest.fixture
def small() -> pd.DataFrame:
    """Group (m, adamw): 10, 10.5, 11.8, 12 and a diverged 30, plus one failed trial."""
    rows = [trial(err=e, lr=lr) for e, lr in ((10.0, 1e-3), (10.5, 2e-3), (11.8, 4e-3), (12.0, 8e-3))]
    rows.append(trial(err=30.0, status="diverged", lr=1e-1))
    rows.append(trial(err=None, status="failed", lr=1e-2, tid="failed"))
    return pd.DataFrame(rows)


def test_importing_analysis_loads_neither_torch_nor_ray():
    code = ("import sys, analysis, analysis.stats, analysis.edf, analysis.figures, analysis.plots; "
            "bad = [m for m in ('torch', 'ray') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_group_statistics_match_hand_computed_values(small):
    g = an.group_stats(small).iloc[0]
    assert (g["n"], g["n_diverged"], g["n_failed"]) == (5, 1, 1)
    assert g["min"] == 10.0
    assert g["median"] == pytest.approx(11.8)
    assert g["mean"] == pytest.approx((10 + 10.5 + 11.8 + 12 + 30) / 5)
    assert g["q25"] == pytest.approx(10.5) and g["q75"] == pytest.approx(12.0)
    assert g["near_opt_1"] == pytest.approx(2 / 5)  # 10, 10.5
    assert g["near_opt_2"] == pytest.approx(4 / 5)  # 12 = best + 2 exactly counts
    assert g["diverged_rate"] == pytest.approx(0.2)
    # E[min of k], without replacement: k=2 weights 4,3,2,1 / 10; k=4 weights 4,1 / 5
    assert g["expected_best"] == pytest.approx({1: 14.86, 2: 10.71, 4: 10.1, 5: 10.0})
    for name, (lo, hi) in g["ci"].items():
        assert lo <= hi, name
    assert g["ci"]["mean"][0] <= g["mean"] <= g["ci"]["mean"][1]
    assert list(g["expected_best_ci"]) == [1, 2, 4, 5]
    # the best of a resample of 5 is >= 11.8 with probability (3/5)^5 = 7.8%, >= 12 with 1%
    assert g["expected_best_ci"][5] == [10.0, pytest.approx(11.8)]
    assert set(g["good_range"]) == {"lr", "weight_decay"}


def test_statistics_are_deterministic_given_the_seed(small):
    a = an.group_stats(small, seed=3)
    b = an.group_stats(small, seed=3)
    assert a.to_dict(orient="records") == b.to_dict(orient="records")


def test_expected_best_equals_brute_force_over_all_subsets():
    rng = np.random.default_rng(0)
    errors = np.round(rng.uniform(10, 20, size=9), 1)
    errors[3] = errors[5]  # ties
    for k in range(1, 10):
        brute = np.mean([min(c) for c in combinations(errors, k)])
        assert an.expected_best(errors, [k])[k] == pytest.approx(brute)
    assert list(an.expected_best(errors)) == [1, 2, 4, 8, 9]
    assert an.default_ks(8) == [1, 2, 4, 8] and an.default_ks(1) == [1]


def test_expected_best_is_stable_for_many_trials():
    errors = np.linspace(10, 60, 3000)
    eb = an.expected_best(errors, [1, 1500, 3000])
    assert eb[1] == pytest.approx(errors.mean())
    assert eb[3000] == pytest.approx(10.0)
    assert 10.0 <= eb[1500] < 10.1


def test_expected_best_curve_decreases_to_the_minimum():
    ks, mean, lo, hi = an.expected_best_curve([14.0, 12.0, 30.0, 11.0, 18.0], n_boot=100)
    assert list(ks) == [1, 2, 3, 4, 5]
    assert np.all(np.diff(mean) <= 1e-12) and mean[-1] == pytest.approx(11.0)
    assert np.all(lo <= hi + 1e-12)


def test_near_optimal_mass_tolerates_float_rounding():
    assert an.near_optimal_mass([10.1, 11.1, 12.2], 1.0) == pytest.approx(2 / 3)


def test_good_range_bootstrap():
    assert an.good_range([12.0], [3e-3]) == pytest.approx((3e-3, 3e-3, 3e-3))
    errors, values = [1.0, 50.0, 50.0, 50.0], [1e-3, 1e-2, 2e-2, 4e-2]
    lo, mid, hi = an.good_range(errors, values, frac=1.0)
    assert mid == pytest.approx(1e-3)  # the best run is drawn in 1 - (3/4)^4 = 68% of the resamples
    assert 1e-3 <= lo <= mid <= hi <= 4e-2
    assert an.good_range(errors, values, seed=1) == an.good_range(errors, values, seed=1)
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, -1, size=200)
    err = 10 + 50 * (x + 2) ** 2 + rng.normal(0, 0.1, size=200)
    lo, mid, hi = an.good_range(err, 10.0 ** x)
    assert lo < 1e-2 < hi and mid == pytest.approx(1e-2, rel=0.3)


def test_groups_split_by_an_extra_column():
    rows = [trial(err=10 + i, mixup=m) for i, m in enumerate([0.0, 0.0, 0.8, 0.8, 0.8])]
    g = an.group_stats(pd.DataFrame(rows), split_by=["mixup"])
    assert list(g["mixup"]) == [0.0, 0.8] and list(g["n"]) == [2, 3]
    assert an.group_keys(["mixup"]) == ["study", "model", "optimizer", "epochs", "mixup"]


def test_a_group_of_only_failed_trials_is_still_listed():
    df = pd.DataFrame([trial(err=10.0), trial(model="x", err=None, status="failed", tid="f")])
    g = an.group_stats(df).set_index("model")
    assert g.loc["x", "n"] == 0 and g.loc["x", "n_failed"] == 1 and g.loc["m", "n_failed"] == 0


def test_ks_matches_scipy_for_every_pair():
    rng = np.random.default_rng(1)
    rows, samples = [], {}
    for model, shift in (("a", 0.0), ("b", 1.5), ("c", 4.0)):
        for opt in ("adamw", "sgd"):
            e = 10 + shift + rng.normal(0, 2, size=12) + (3 if opt == "sgd" else 0)
            samples[model, opt] = e
            rows += [trial(model=model, optimizer=opt, err=float(v), tid=f"{model}{opt}{i}") for i, v in enumerate(e)]
    df = pd.DataFrame(rows)
    ks = an.ks_models(df)
    assert len(ks) == 6  # 3 pairs x 2 optimizers
    for r in ks.to_dict(orient="records"):
        ref = stats.ks_2samp(samples[r["a"], r["optimizer"]], samples[r["b"], r["optimizer"]])
        assert (r["D"], r["p"]) == pytest.approx((ref.statistic, ref.pvalue))
    ko = an.ks_optimizers(df)
    assert len(ko) == 3
    for r in ko.to_dict(orient="records"):
        ref = stats.ks_2samp(samples[r["model"], r["a"]], samples[r["model"], r["b"]])
        assert (r["D"], r["p"]) == pytest.approx((ref.statistic, ref.pvalue))


def test_ks_names_arms_by_study_when_several_are_compared():
    df = pd.DataFrame([trial(study=s, err=10.0 + i, tid=f"{s}{i}") for s in ("s1", "s2") for i in range(3)])
    ks = an.ks_models(df)
    assert list(ks[["a", "b"]].iloc[0]) == ["s1 / m", "s2 / m"]


def test_edf_is_a_monotone_step_function_ending_at_one():
    x, y = an.edf([3.0, 1.0, 2.0, 2.0])
    assert list(x) == [1.0, 2.0, 3.0] and list(y) == pytest.approx([0.25, 0.75, 1.0])
    rng = np.random.default_rng(2)
    v = rng.exponential(5, size=101)
    x, y = an.edf(v)
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0) and y[-1] == 1.0
    assert list(an.edf_at([1.0, 2.0, 2.0, 3.0], [0.5, 1.0, 2.5, 9.0])) == pytest.approx([0.0, 0.25, 0.75, 1.0])


def test_delta_to_best_edf_starts_at_zero():
    x, y = an.edf(an.delta_to_best([12.0, 15.0, 13.0]))
    assert list(x) == [0.0, 1.0, 3.0] and y[-1] == 1.0


def test_normalised_edf_weights_equalise_bins():
    w = an.normalized_weights([1.0, 1.0, 1.0, 10.0], bins=2, log=False)
    assert list(w) == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2]) and w.sum() == pytest.approx(1.0)
    w = an.normalized_weights([0.5, 0.6, 4.0, 4.2, 30.0], bins=3)  # log bins: 2 + 2 + 1 runs
    assert list(w) == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 3])
    x, y = an.edf([20.0, 21.0, 22.0, 40.0], weights=an.normalized_weights([1.0, 1.0, 1.0, 10.0], bins=2, log=False))
    assert list(y) == pytest.approx([1 / 6, 2 / 6, 3 / 6, 1.0])
    assert list(an.normalized_weights([2.0, 2.0])) == [0.5, 0.5]


def test_edf_band_brackets_a_monotone_range():
    rng = np.random.default_rng(3)
    v = rng.normal(15, 3, size=40)
    grid = an.edf_grid(v, points=50)
    lo, hi = an.edf_band(v, grid, n_boot=200)
    assert np.all(lo <= hi) and np.all(np.diff(lo) >= 0) and np.all(np.diff(hi) >= 0)
    assert lo[-1] == 1.0 and hi[-1] == 1.0 and np.all((lo >= 0) & (hi <= 1))
    f = an.edf_at(v, grid)
    assert np.mean((lo <= f) & (f <= hi)) > 0.95
    lo, hi = an.edf_band(v - v.min(), an.edf_grid(v - v.min()), delta=True)
    assert lo[0] > 0  # every resample's best sits at 0


def test_edf_data_one_line_per_arm_with_bands(small):
    df = pd.concat([small, pd.DataFrame([trial(model="n", err=e) for e in (11.0, 13.0, 15.0)])], ignore_index=True)
    d = an.edf_data(df, "adamw", 10)
    assert [l.arm for l in d.lines] == ["m", "n"]
    for line in d.lines:
        assert line.y[-1] == 1.0 and np.all(np.diff(line.y) > 0) and len(line.lo) == len(line.band_x)
    assert d.lines[0].name.startswith("m [n=5, best=10.00")
    delta = an.edf_data(df, "adamw", 10, delta=True)
    assert all(l.x[0] == 0.0 for l in delta.lines)
    weighted = an.edf_data(df, "adamw", 10, weight_by="gflops")
    assert weighted.lines[0].lo is None and "normalised" in weighted.title


def test_hparam_data_marks_diverged_trials_and_ranges(small):
    d = an.hparam_data(small, "adamw", 10, n_resamples=200)
    assert [p.param for p in d.panels] == ["lr", "weight_decay", LR_WD]
    lr = d.panels[0]
    assert lr.log and list(lr.points[0].diverged) == [False, False, False, False, True]
    lo, mid, hi = lr.ranges["m"]
    assert 1e-3 <= lo <= mid <= hi <= 1e-1
    assert np.allclose(d.panels[2].points[0].x, small["lr"][:5] * small["weight_decay"][:5])


def test_learning_curves_pick_best_and_worst(small):
    curves = pd.DataFrame([{"study": "s", "trial_id": tid, "epoch": e, "train_loss": 1.0 / e, "top1_err": err + 10 / e,
                            "lr": 1e-3, "elapsed_s": e} for tid, err in zip(small["trial_id"], small["top1_err"])
                           for e in (1, 2, 3)])
    d = an.learning_curves_data(small, curves, "adamw", 10)
    assert [l.dash for l in d.lines] == ["solid", "dot"]
    assert d.lines[0].y[-1] == pytest.approx(10 + 10 / 3) and d.lines[1].y[-1] == pytest.approx(30 + 10 / 3)
    assert "diverged" in d.lines[1].name
    loss = an.learning_curves_data(small, curves, "adamw", 10, metric="train_loss")
    assert loss.y_title == "train loss"


def test_optimizer_and_epochs_panels():
    df = pd.DataFrame([trial(optimizer=o, err=e, epochs=ep, tid=f"{o}{e}{ep}") for o, base in (("adamw", 10), ("sgd", 14))
                       for ep in (5, 10) for e in (base + 5 / ep, base + 1 + 5 / ep)])
    d = an.optimizer_data(df, 10)
    assert {(b.optimizer, b.best) for b in d.boxes} == {("adamw", 10.5), ("sgd", 14.5)}
    assert d.gaps == {"m": pytest.approx(4.0)}
    e = an.epochs_data(df)
    assert {l.panel for l in e.lines} == {"adamw", "sgd"}
    best = [l for l in e.lines if l.panel == "adamw" and l.dash == "solid"][0]
    assert list(best.x) == [5.0, 10.0] and list(best.y) == pytest.approx([11.0, 10.5])
    assert an.epoch_budgets(df) == [5, 10] and an.slices(df) == [("adamw", 5), ("adamw", 10), ("sgd", 5), ("sgd", 10)]


def test_sampled_columns_come_from_the_knob_records():
    df = pd.DataFrame([trial(mixup=0.5, label_smoothing=0.1, **{"distillation.type": "soft"})])
    knobs = [{"column": "lr", "kind": "log_uniform", "values": [1e-4, 1e-2]},
             {"column": "mixup", "kind": "uniform", "values": [0.0, 1.0]},
             {"column": "mixup", "kind": "uniform", "values": [0.0, 0.5]},  # the same column for another optimizer
             {"column": "distillation.type", "kind": "choice", "values": ["soft", "hard"]},  # a factor, not a range
             {"column": "absent", "kind": "uniform", "values": [0.0, 1.0]}]  # not in these results
    assert an.sampled_columns(df, knobs) == ["lr", "weight_decay", "mixup"]
    assert an.sampled_columns(df, []) == ["lr", "weight_decay"]


def test_renderers_escape_names_and_draw_every_piece(small):
    df = small.assign(model="<b>vit</b>")
    colours = an.colour_map(an.arm_names(df))
    fig = an.plot_edf(an.edf_data(df, "adamw", 10, n_boot=50), colours)
    names = [t.name for t in fig.data if t.name]
    assert names and all("<b>" not in n and "&lt;b&gt;" in n for n in names)
    assert len(fig.data) == 3  # band low, band high, line
    h = an.plot_hparams(an.hparam_data(df, "adamw", 10, n_resamples=100), colours)
    assert any(t.marker.symbol == "x" for t in h.data if t.mode == "markers")
    o = an.plot_optimizers(an.optimizer_data(pd.concat([df, df.assign(optimizer="sgd")]), 10))
    assert {t.type for t in o.data} == {"box", "scatter"}


def test_layer_table_reads_lists_and_arrays_and_skips_what_carries_no_similarity():
    rows = [trial(err=10.0 + i, tid=f"t{i}", patch_cos_sim_layers=cells)
            for i, cells in enumerate([[0.2, 0.4], np.array([0.4, 0.8]), [], None, np.array([0.6, np.nan])])]
    rows += [trial(err=90.0, status="diverged", tid="d", patch_cos_sim_layers=[1.0, 1.0]),
             trial(err=None, status="failed", tid="f", patch_cos_sim_layers=[1.0, 1.0]),
             trial(model="deep", tid="deep", patch_cos_sim_layers=[0.1, 0.2, 0.3, 0.4])]
    table = an.layer_similarity_table(pd.DataFrame(rows)).set_index(["model", "layer"])
    assert list(table.loc["m", "n"]) == [3, 2]  # block 2 of the last trial is NaN
    assert list(table.loc["m", "median"]) == pytest.approx([0.4, 0.6])
    assert list(table.loc["m", "q25"]) == pytest.approx([0.3, 0.5]) and list(table.loc["m", "q75"]) == pytest.approx([0.5, 0.7])
    assert list(table.loc["deep", "median"]) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    d = an.layer_similarity_data(pd.DataFrame(rows), 10)
    assert [(l.arm, list(l.x)) for l in d.lines] == [("deep", [1, 2, 3, 4]), ("m", [1, 2])]
    assert list(d.lines[1].lo) == pytest.approx([0.3, 0.5]) and "adamw" in d.title
    assert an.has_layer_similarity(pd.DataFrame(rows))
    assert not an.has_layer_similarity(pd.DataFrame([trial(patch_cos_sim_layers=[]), trial(tid="x")]))
    assert not an.has_layer_similarity(pd.DataFrame([trial()])) and an.layer_similarity_table(pd.DataFrame([trial()])).empty


def test_factor_columns_vary_within_a_model_and_take_few_values():
    rows = []
    for i in range(12):
        for model in ("a", "b"):
            rows.append(trial(model=model, err=10.0 + i, tid=f"{model}{i}", **{
                "distillation.type": [None, "soft", "hard"][i % 3], "patch_losses.cosine": [0.0, 0.5][i % 2],
                "mixup": i / 12, "init_values": 1e-5 if model == "a" else 1e-6, "label_smoothing": 0.1,
                "patch_cos_sim_layers": [0.1 * i]}))
    df = pd.DataFrame(rows)
    base = ["study", "trial_id", "model", "optimizer", "lr", "weight_decay", "epochs", "seed", "batch_size", "status",
            "top1_err", "best_top1_err", "train_loss", "wall_time_s", "images_per_s", "params", "gflops",
            "patch_cos_sim", "error", "patch_cos_sim_layers"]
    assert an.factor_columns(df, base) == ["distillation.type", "patch_losses.cosine"]
    assert an.factor_columns(df, base, exclude=["patch_losses.cosine"]) == ["distillation.type"]
    assert an.factor_columns(df, base, max_levels=12) == ["distillation.type", "mixup", "patch_losses.cosine"]
    assert an.factor_levels(df, "distillation.type") == ["hard", "soft", None]
    # a knob that is constant in each study but differs between studies is no factor
    two = pd.concat([df.assign(study="s1", label_smoothing=0.0), df.assign(study="s2")], ignore_index=True)
    assert an.factor_columns(two, base) == ["distillation.type", "patch_losses.cosine"]
    assert "patch_cos_sim_layers" not in an.split_choices(df) and "distillation.type" in an.split_choices(df)


def test_groups_split_by_a_column_mixing_numbers_and_strings():
    df = pd.DataFrame([trial(err=10.0, tid="a", teacher="deit_tiny"), trial(err=11.0, tid="b", teacher=3.0),
                       trial(err=12.0, tid="c", teacher=None)])
    g = an.group_stats(df, split_by=["teacher"], n_boot=10, n_range_boot=10)
    assert sorted(map(str, g["teacher"])) == ["3.0", "None", "deit_tiny"] and list(g["n"]) == [1, 1, 1]
