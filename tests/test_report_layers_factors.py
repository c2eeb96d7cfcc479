"""The report on studies with per-layer patch similarity and factor knobs (dotted columns such as
`distillation.type`, `patch_losses.cosine`), written with the real store: numbers checked by
hand, sections that appear only when there is something to draw, factors found without being
named, and bad --split-by values."""

from __future__ import annotations

import contextlib
import io
import json
import re
from itertools import product
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from stability.report.__main__ import main
from stability.results.store import ResultsStore, read_study
from stability.spec import parse_spec
from test_report import make_study

DISTILLATION = (None, "hard", "soft")
COSINE = (0.0, 0.5)
# vit_p_tiny: three blocks; the four finished trials of each (distillation, cosine) cell get
# these rows, so every cell's median / quartiles are those of the columns below
VIT_LAYERS = ([0.1, 0.2, 0.3], [0.3, 0.4, 0.5], [0.5, 0.6, 0.7], [0.7, 0.8, 0.9])
SPEC = {"name": "factors", "dataset": {"name": "digits", "img_size": 16}, "models": ["vit_p_tiny", "regnety_tiny"],
        "optimizers": {"adamw": {"lr": {"log_uniform": [1e-4, 1e-2]}, "weight_decay": 0.05}},
        "sampler": "grid", "samples": 4, "epochs": 10, "repeats": 1, "seed": 0,
        "train": {"label_smoothing": 0.1, "mixup": {"uniform": [0.0, 0.8]},
                  "distillation": {"type": {"choice": list(DISTILLATION)}},
                  "patch_losses.cosine": {"choice": list(COSINE)}}}


def make_factor_study(root: Path) -> Path:
    """2 models x 3 distillation types x 2 cosine weights x 4 points of lr (+ one diverged and one
    failed vit_p_tiny trial, whose similarities must be ignored). Error drops with distillation
    and with the cosine loss; mixup is continuous (one value per point), init_values is set per
    model: neither is a factor."""
    extra = {"distillation.type": pa.string(), "patch_losses.cosine": pa.float64(), "label_smoothing": pa.float64(),
             "mixup": pa.float64(), "init_values": pa.float64()}
    store = ResultsStore(root / "factors", extra)
    store.write_spec(parse_spec(yaml.safe_dump(SPEC), "factors"), {"stability": "0.1.0"})
    gain = {None: 0.0, "hard": 1.0, "soft": 2.0}
    for model, (dist, cos), point in product(("vit_p_tiny", "regnety_tiny"), product(DISTILLATION, COSINE), range(4)):
        lr = 1e-4 * 10 ** (2 * point / 3)
        err = 20.0 - gain[dist] - 4 * cos + (point - 1.5) ** 2 + (3.0 if model == "regnety_tiny" else 0.0)
        layers = VIT_LAYERS[point] if model == "vit_p_tiny" else []
        if model == "vit_p_tiny" and point % 2:  # some cells as numpy arrays: both forms must read the same
            layers = np.asarray(layers)
        tid = f"{model}-{dist}-{cos}-{point}"
        store.write_trial({
            "study": "factors", "trial_id": tid, "model": model, "optimizer": "adamw", "lr": lr, "weight_decay": 0.05,
            "epochs": 10, "seed": point, "batch_size": 64, "status": "ok", "top1_err": err, "best_top1_err": err,
            "train_loss": 0.5, "wall_time_s": 3.0, "images_per_s": 800.0, "params": 400_000, "gflops": 0.02,
            "patch_cos_sim": layers[-1] if len(layers) else None, "patch_cos_sim_layers": layers, "error": "",
            "distillation.type": dist, "patch_losses.cosine": cos, "label_smoothing": 0.1, "mixup": 0.2 * point,
            "init_values": 1e-5 if model == "vit_p_tiny" else None}, [])
    common = {"study": "factors", "model": "vit_p_tiny", "optimizer": "adamw", "lr": 0.5, "weight_decay": 0.05,
              "epochs": 10, "distillation.type": "soft", "patch_losses.cosine": 0.5, "label_smoothing": 0.1, "mixup": 0.0,
              "init_values": 1e-5}
    store.write_trial({**common, "trial_id": "diverged", "status": "diverged", "top1_err": 90.0,
                       "patch_cos_sim_layers": [0.99, 0.99, 0.99]}, [])
    store.write_trial({**common, "trial_id": "failed", "status": "failed", "error": "RuntimeError: boom",
                       "patch_cos_sim_layers": [0.98, 0.98, 0.98]}, [])
    return root / "factors"


def drop_layer_column(study: Path) -> None:
    """Rewrite every trials file without `patch_cos_sim_layers`, as studies before it was recorded."""
    for path in (study / "trials.parquet").glob("*.parquet"):
        pq.write_table(pq.read_table(path).drop(["patch_cos_sim_layers"]), path)


def build(study: Path, out: Path, *extra: str) -> tuple[str, dict]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert main([str(study), "--out", str(out), "--json", *extra]) == 0, stderr.getvalue()
    return out.read_text(encoding="utf-8"), json.loads(stdout.getvalue())


@pytest.fixture(scope="module")
def factor_study(tmp_path_factory) -> Path:
    return make_factor_study(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def factor_report(factor_study, tmp_path_factory) -> tuple[str, dict]:
    return build(factor_study, tmp_path_factory.mktemp("report") / "report.html")


def test_per_layer_similarity_matches_hand_computed_quartiles(factor_study, factor_report):
    import stability.analysis as an

    trials = read_study(factor_study).trials
    assert any(isinstance(c, np.ndarray) for c in trials["patch_cos_sim_layers"])  # as pyarrow hands them over
    table = an.layer_similarity_table(trials)
    vit = table[table["model"] == "vit_p_tiny"]
    # block 1 over the 24 finished trials: 0.1, 0.3, 0.5, 0.7 six times each (diverged 0.99 and failed 0.98 ignored)
    assert list(vit["layer"]) == [1, 2, 3] and list(vit["n"]) == [24, 24, 24]
    assert list(vit["median"]) == pytest.approx([0.4, 0.5, 0.6])
    assert list(vit["mean"]) == pytest.approx([0.4, 0.5, 0.6])
    # quartiles of (0.1 x6, 0.3 x6, 0.5 x6, 0.7 x6), linear interpolation at sorted positions 5.75 and
    # 17.25: 0.1 + 0.75 * 0.2 and 0.5 + 0.25 * 0.2
    assert list(vit["q25"]) == pytest.approx([0.25, 0.35, 0.45]) and list(vit["q75"]) == pytest.approx([0.55, 0.65, 0.75])
    assert set(table["model"]) == {"vit_p_tiny"}  # regnety recorded empty lists: no rows
    _, summary = factor_report
    rows = [r for r in summary["patch_cos_sim_by_layer"] if r["model"] == "vit_p_tiny"]
    assert [(r["layer"], r["median"], r["q25"], r["q75"], r["n"]) for r in rows] == [
        (1, pytest.approx(0.4), pytest.approx(0.25), pytest.approx(0.55), 24),
        (2, pytest.approx(0.5), pytest.approx(0.35), pytest.approx(0.65), 24),
        (3, pytest.approx(0.6), pytest.approx(0.45), pytest.approx(0.75), 24)]


def test_split_per_layer_similarity_by_a_dotted_column(factor_study, tmp_path):
    import stability.analysis as an

    table = an.layer_similarity_table(read_study(factor_study).trials, ["distillation.type"])
    soft = table[(table["distillation.type"] == "soft") & (table["layer"] == 1)]
    assert list(soft["n"]) == [8] and list(soft["median"]) == pytest.approx([0.4])  # 2 cosine weights x 4 points
    assert table["distillation.type"].isna().sum() == 3  # the trials without distillation: one row per block


def test_layer_section_appears_only_with_values(factor_report, tmp_path):
    text, _ = factor_report
    assert "Over-smoothing: patch cosine similarity by layer" in text and 'href="#layers"' in text
    assert "vit_p_tiny" in text
    plain = make_study(tmp_path / "a", samples=3, failed=False)  # the column holds nulls only
    text, summary = build(plain, tmp_path / "a.html")
    assert "Over-smoothing" not in text and summary["patch_cos_sim_by_layer"] == []
    old = make_study(tmp_path / "b", samples=3, failed=False)
    drop_layer_column(old)
    assert "patch_cos_sim_layers" not in read_study(old).trials
    text, summary = build(old, tmp_path / "b.html")
    assert "Over-smoothing" not in text and summary["patch_cos_sim_by_layer"] == [] and summary["factors"] == []
    assert "Kolmogorov-Smirnov tests" in text


def test_factors_are_found_without_being_named(factor_report):
    text, summary = factor_report
    found = {f["column"]: f for f in summary["factors"]}
    assert list(found) == ["distillation.type", "patch_losses.cosine"]  # not label_smoothing, mixup, init_values
    assert found["distillation.type"]["levels"] == ["hard", "soft", None]
    assert found["patch_losses.cosine"]["levels"] == [0.0, 0.5]
    groups = {(g["model"], g["distillation.type"]): g for g in found["distillation.type"]["groups"]}
    assert len(groups) == 6 and groups["vit_p_tiny", "soft"]["n"] == 9 and groups["vit_p_tiny", "soft"]["n_diverged"] == 1
    # best soft-distilled vit_p_tiny trial: 20 - 2 - 4 * 0.5 + 0.5 ** 2
    assert groups["vit_p_tiny", "soft"]["min"] == pytest.approx(16.25)
    assert groups["regnety_tiny", None]["min"] == pytest.approx(21.25) and groups["vit_p_tiny", "soft"]["n_failed"] == 1
    for column in ("distillation.type", "patch_losses.cosine"):
        assert f"Split by {column}" in text and f'href="#factor-{column}"' in text
    assert "distillation.type=soft" in text and "patch_losses.cosine=0.5" in text
    assert "Split by mixup" not in text and "Split by init_values" not in text
    assert [g["model"] for g in summary["groups"]] == ["regnety_tiny", "vit_p_tiny"]  # main table not split


def test_split_by_dotted_numeric_and_string_columns(factor_study, tmp_path):
    text, summary = build(factor_study, tmp_path / "r.html", "--split-by", "patch_losses.cosine",
                          "--split-by", "distillation.type")
    groups = {(g["model"], g["patch_losses.cosine"], g["distillation.type"]): g["n"] for g in summary["groups"]}
    assert len(groups) == 12 and groups["regnety_tiny", 0.5, None] == 4 and groups["vit_p_tiny", 0.5, "soft"] == 5
    assert summary["factors"] == []  # both already split the main sections
    layer_groups = {(r["patch_losses.cosine"], r["distillation.type"]) for r in summary["patch_cos_sim_by_layer"]}
    assert len(layer_groups) == 6
    assert "vit_p_tiny / patch_losses.cosine=0.5 / distillation.type=None" in text
    assert {(k["a"], k["b"]) for k in summary["ks"]} >= {
        ("regnety_tiny / patch_losses.cosine=0.0 / distillation.type=hard",
         "regnety_tiny / patch_losses.cosine=0.0 / distillation.type=soft")}


def test_exported_figures_include_layers_and_factors(factor_study, tmp_path, monkeypatch):
    import stability.report.__main__ as report

    seen = {}
    monkeypatch.setattr(report, "export_figures", lambda figures, out_dir: seen.setdefault(out_dir, [n for n, _ in figures]))
    out = tmp_path / "r.html"
    assert main([str(factor_study), "--out", str(out), "--export-dir", str(tmp_path / "figs")]) == 0
    names = seen[tmp_path / "figs"]
    assert len(names) == len(set(names)) == len(re.findall(r'<div id="fig-\d+"', out.read_text()))
    assert {"patch_cos_sim_layers_10ep", "edf_adamw_10ep_by_distillation.type",
            "edf_delta_adamw_10ep_by_patch_losses.cosine"} <= set(names)


@pytest.mark.parametrize("column, why", [("distillation.kind", "no such trials column"),
                                         ("patch_cos_sim_layers", "not a knob column")])
def test_bad_split_by_names_the_usable_columns(factor_study, tmp_path, capsys, column, why):
    with pytest.raises(SystemExit) as exc:
        main([str(factor_study), "--out", str(tmp_path / "r.html"), "--split-by", column])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: --split-by {column}: {why}")
    choices = err.split("choose from: ")[1].strip().split(", ")
    assert {"distillation.type", "patch_losses.cosine", "mixup", "init_values"} <= set(choices)
    assert not {"top1_err", "patch_cos_sim_layers", "model", "lr"} & set(choices)
    assert not (tmp_path / "r.html").exists()
