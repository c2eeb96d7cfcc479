"""Verdicts against independent computations on paired designs the tests build."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from stability.analysis.sensitivity import lr_sensitivities, lr_sensitivity
from stability.analysis.verdicts import points_needed, verdicts, wilson_interval


def trials_of(errors: dict[str, list[float]], repeats: int = 1, status=None, optimizer="adamw") -> pd.DataFrame:
    """One row per model, point and repeat; `errors[model][point]` (repeats add +-0.1 around it)."""
    rows = []
    for model, per_point in errors.items():
        for point, err in enumerate(per_point):
            for repeat in range(repeats):
                jitter = 0.0 if repeats == 1 else (0.1 if repeat % 2 else -0.1)
                rows.append({"study": "s", "trial_id": f"{model}-{point}-{repeat}", "model": model,
                             "optimizer": optimizer, "epochs": 15, "lr": 1e-3 * (point + 1), "weight_decay": 0.05,
                             "seed": 1000 * repeat + point, "point": point, "repeat": repeat,
                             "status": (status or {}).get((model, point, repeat), "ok"), "top1_err": err + jitter})
    return pd.DataFrame(rows)


def wilson_by_quadratic(k: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson bounds as the roots of (p_hat - p)^2 = z^2 p (1 - p) / n, solved independently."""
    p_hat = k / n
    a, b, c = 1 + z * z / n, -(2 * p_hat + z * z / n), p_hat * p_hat
    lo, hi = sorted(np.roots([a, b, c]).real)
    return max(0.0, lo), min(1.0, hi)


@pytest.mark.parametrize("k,n", [(8, 8), (0, 8), (5, 8), (4.5, 9), (30, 64)])
def test_wilson_interval_is_the_score_interval(k, n):
    assert wilson_interval(k, n) == pytest.approx(wilson_by_quadratic(k, n), abs=1e-12)


def test_a_model_better_at_every_point_wins_with_the_exact_numbers():
    b = [20.0, 15.0, 30.0, 12.0, 18.0, 25.0, 40.0, 22.0]
    a = [e - d for e, d in zip(b, [1, 2, 3, 4, 5, 6, 7, 8])]
    [v] = verdicts(trials_of({"vit_c": a, "vit_p": b}))
    assert (v["a"], v["b"], v["n_pairs"], v["p_a_better"]) == ("vit_c", "vit_p", 8, 1.0)
    assert v["p_a_better_ci"] == pytest.approx(list(wilson_by_quadratic(8, 8)))
    assert v["wilcoxon_p"] == pytest.approx(2 / 2 ** 8)  # exact: all 8 differences of one sign
    ks = stats.ks_2samp(a, b)
    assert (v["ks_D"], v["ks_p"]) == pytest.approx((ks.statistic, ks.pvalue))
    assert v["decision"] == "a"
    assert v["wilcoxon_p_holm"] == v["wilcoxon_p"] and v["holm_n"] == 1  # one comparison: nothing to adjust
    assert v["sentence"] == ("vit_c beats vit_p under adamw at 15 epochs on 8 of 8 points "
                             "(P = 1.00 [0.68, 1.00], Wilcoxon p = 0.008, Holm-adjusted over 1 comparison p = 0.008)")


def test_repeats_are_averaged_per_point_and_failed_trials_left_out():
    a, b = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0], [10.5, 10.0, 12.5, 12.0, 14.5, 14.0, 17.0]
    failed = {("a", 0, 1): "failed"}  # its error would not count; the point keeps its other repeat
    frame = trials_of({"a": a, "b": b}, repeats=2, status=failed)
    frame.loc[(frame["model"] == "a") & (frame["point"] == 0) & (frame["repeat"] == 1), "top1_err"] = 99.0
    [v] = verdicts(frame)
    means_a = [a[0] - 0.1] + a[1:]  # point 0: only repeat 0 (err - 0.1) is usable
    diffs = np.array(means_a) - np.array(b)
    assert v["n_pairs"] == 7  # points, not trials: repeats never count twice
    assert v["a_wins"] == int((diffs < 0).sum()) and v["b_wins"] == int((diffs > 0).sum())
    assert v["wilcoxon_p"] == pytest.approx(stats.wilcoxon(diffs, zero_method="wilcox").pvalue)
    assert v["mean_diff"] == pytest.approx(diffs.mean())


def test_ties_count_one_half_and_all_equal_is_undecided():
    same = [5.0, 6.0, 7.0, 8.0]
    [v] = verdicts(trials_of({"a": same, "b": same}))
    assert v["p_a_better"] == 0.5 and v["wilcoxon_p"] is None and v["decision"] == "undecided"
    [v] = verdicts(trials_of({"a": [1.0, 6.0, 7.0, 9.0], "b": [2.0, 6.0, 7.0, 8.0]}))
    assert v["p_a_better"] == pytest.approx((1 + 0.5 * 2) / 4)


def test_few_points_can_never_decide_and_the_sentence_says_so_and_how_many_would():
    [v] = verdicts(trials_of({"a": [1.0, 2.0, 3.0, 4.0, 5.0], "b": [2.0, 3.0, 4.0, 5.0, 6.0]}))
    assert v["decision"] == "undecided" and v["p_a_better"] == 1.0
    assert v["wilcoxon_p"] == pytest.approx(2 / 2 ** 5) and v["wilcoxon_p"] > 0.05
    assert "with 5 non-zero differences Wilcoxon can never reach p < 0.05" in v["sentence"]
    n = points_needed(0.75)
    assert wilson_by_quadratic(0.75 * n, n)[0] > 0.5 and wilson_by_quadratic(0.75 * (n - 1), n - 1)[0] <= 0.5


def test_one_verdict_per_pair_optimizer_and_epochs():
    frame = pd.concat([trials_of({"a": [1.0] * 6, "b": [2.0] * 6, "c": [3.0] * 6}),
                       trials_of({"a": [1.0] * 6, "b": [2.0] * 6, "c": [3.0] * 6}, optimizer="sgd")])
    found = {(v["optimizer"], v["a"], v["b"]) for v in verdicts(frame)}
    assert found == {(o, x, y) for o in ("adamw", "sgd") for x, y in (("a", "b"), ("a", "c"), ("b", "c"))}
    assert all(math.isfinite(v["p_a_better"]) for v in verdicts(frame))


def test_the_report_opens_with_the_verdicts_and_json_carries_them(tmp_path):
    import contextlib
    import io
    import json
    import re

    from stability.report.__main__ import main
    from test_report import make_study

    study = make_study(tmp_path / "runs")  # ViT_C more stable than ViT_P at the same points
    out, stdout = tmp_path / "r.html", io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        assert main([str(study), "--out", str(out), "--json"]) == 0
    data = json.loads(stdout.getvalue())
    assert {"verdicts", "variance", "frontier", "edge_warnings", "importance"} <= set(data)
    assert {(f["model"], f["optimizer"]) for f in data["frontier"]} == {(m, o) for m in ("vit_c_tiny", "vit_p_tiny")
                                                                       for o in ("adamw", "sgd")}
    assert all(set(i["knobs"]) <= {"lr", "weight_decay"} for i in data["importance"])
    found = data["verdicts"]
    assert {(v["optimizer"], v["a"], v["b"]) for v in found} == {("adamw", "vit_c_tiny", "vit_p_tiny"),
                                                                  ("sgd", "vit_c_tiny", "vit_p_tiny")}
    assert all(v["n_pairs"] == 8 for v in found)  # points recovered from the seeds of these rows
    html = out.read_text()
    assert re.findall(r'<section id="([^"]+)"', html)[0] == "verdicts"
    assert "Every verdict as a sentence" not in html  # two models: the sentences themselves, no matrix
    for v in found:
        assert v["sentence"] in html.replace("&#39;", "'")


def test_a_difference_smaller_than_the_seed_noise_is_called_so():
    rng = np.random.default_rng(3)
    points = 12
    base = rng.uniform(10, 40, points)
    rows = []
    for model, shift, noise in (("a", -0.5, 2.0), ("b", 0.0, 1.0)):
        for point in range(points):
            for repeat in range(2):
                rows.append({"study": "s", "trial_id": f"{model}-{point}-{repeat}", "model": model, "optimizer": "adamw",
                             "epochs": 15, "lr": 1e-3, "weight_decay": 0.05, "seed": 1000 * repeat + point,
                             "point": point, "repeat": repeat, "status": "ok",
                             "top1_err": base[point] + shift + (noise if repeat else -noise) * rng.uniform(0.5, 1.5)})
    frame = pd.DataFrame(rows)
    [v] = verdicts(frame)
    # independent: within-point sample variance (ddof=1) averaged over points, per model, then pooled
    var = {m: g.groupby("point")["top1_err"].var(ddof=1).mean() for m, g in frame.groupby("model")}
    pooled = math.sqrt((var["a"] + var["b"]) / 2)
    means = frame.groupby(["model", "point"])["top1_err"].mean().unstack(0)
    assert v["seed_sd"] == pytest.approx(pooled)
    assert v["mean_diff"] == pytest.approx((means["a"] - means["b"]).mean())
    assert abs(v["mean_diff"]) < pooled and v["within_seed_noise"] is True
    assert f"smaller than the seed noise of one trial ({pooled:.2f} points)" in v["sentence"]
    # without repeats there is no seed noise to compare with, and the sentence says nothing of it
    [single] = verdicts(frame[frame["repeat"] == 0])
    assert single["seed_sd"] is None and single["within_seed_noise"] is False
    assert "seed noise" not in single["sentence"]


def test_holm_adjustment_equals_statsmodels_over_the_whole_study_and_decides():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(5)
    base = rng.uniform(10, 40, 8)
    per_model = {"a": base - np.arange(1, 9), "b": base, "c": base + rng.normal(0, 2, 8), "d": base + rng.normal(0, 2, 8)}
    frame = pd.concat([trials_of({m: list(e) for m, e in per_model.items()}, optimizer=o) for o in ("adamw", "sgd")])
    found = verdicts(frame)
    assert len(found) == 2 * 6 and all(v["holm_n"] == 12 for v in found)  # every pair under both optimizers
    raw = [v["wilcoxon_p"] for v in found]
    reject, adjusted, _, _ = multipletests(raw, alpha=0.05, method="holm")
    assert [v["wilcoxon_p_holm"] for v in found] == pytest.approx(list(adjusted), abs=1e-12)
    ab = next(v for v in found if (v["a"], v["b"], v["optimizer"]) == ("a", "b", "adamw"))
    assert ab["wilcoxon_p"] == pytest.approx(2 / 2 ** 8) and ab["p_a_better_ci"][0] > 0.5  # decided without correction
    assert ab["wilcoxon_p_holm"] > 0.05 and ab["decision"] == "undecided"  # not after it
    assert "Holm-adjusted over 12 comparisons p = " in ab["sentence"]
    assert [v["decision"] != "undecided" for v in found] == list(reject & np.array([
        v["p_a_better_ci"][0] > 0.5 or v["p_a_better_ci"][1] < 0.5 for v in found]))


def test_lr_sensitivity_is_its_definition_with_diverged_trials_at_chance():
    errors = [12.0, 15.0, 30.0, 90.0, 95.0, 20.0]  # 90: a diverged trial (chance); 95: worse than chance
    status = {("m", 3, 0): "diverged"}
    frame = trials_of({"m": errors}, status=status)
    [row] = lr_sensitivities(frame)
    chance = 90.0
    assert row["cap"] == chance and row["n"] == 6 and row["n_points"] == 6
    assert row["value"] == pytest.approx(np.mean(np.minimum(errors, chance)) - min(errors))
    lo, hi = row["ci"]
    assert lo <= row["value"] <= hi
    same = lr_sensitivity([5.0, 5.0, 5.0], [0, 1, 2])
    assert same["value"] == 0.0 and same["ci"] == [0.0, 0.0]
    assert lr_sensitivity([7.0])["ci"] is None and lr_sensitivity([])["value"] is None
    # repeats of a point are drawn together: with two points there are only three distinct resamples
    two = lr_sensitivity([1.0, 3.0, 5.0, 9.0], [0, 0, 1, 1], n_boot=200)
    assert two["n_points"] == 2 and two["value"] == pytest.approx(np.mean([1, 3, 5, 9]) - 1)
    assert two["ci"][0] >= 1.0 and two["ci"][1] <= np.mean([1.0, 3.0, 5.0, 9.0]) - 1 + 1e-9


def test_the_sentence_says_which_model_is_less_sensitive_when_the_intervals_part():
    rng = np.random.default_rng(2)
    calm = list(10 + rng.uniform(0, 1, 16))
    wild = list(10 + rng.uniform(0, 40, 16))
    [v] = verdicts(trials_of({"calm": calm, "wild": wild}))
    rows = {r["model"]: r for r in lr_sensitivities(trials_of({"calm": calm, "wild": wild}))}
    assert rows["calm"]["ci"][1] < rows["wild"]["ci"][0]
    assert v["sentence"].endswith(f"; calm is the less sensitive to its learning rate (lr sensitivity "
                                  f"{rows['calm']['value']:.1f} [{rows['calm']['ci'][0]:.1f}, {rows['calm']['ci'][1]:.1f}]"
                                  f" against {rows['wild']['value']:.1f} [{rows['wild']['ci'][0]:.1f}, "
                                  f"{rows['wild']['ci'][1]:.1f}] points)")
    [close] = verdicts(trials_of({"a": calm, "b": [e + 0.1 for e in calm]}))
    assert "sensitive" not in close["sentence"]
