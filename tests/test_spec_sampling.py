"""Study specs, the sampler's plan (determinism, pairing, bounds) and the results store."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from stability.sampling import map_unit, plan_summary, plan_trials
from stability.spec import Distribution, SpecError, builtin_names, load_spec, parse_spec
from stability.results.schema import extra_column_type
from stability.results.store import ResultsStore, read_study

SPEC = """
name: t
dataset: {name: digits, img_size: 16}
models: [vit_p_tiny, vit_c_tiny]
optimizers:
  adamw: {lr: {log_uniform: [1.0e-4, 1.0e-2]}, weight_decay: {log_uniform: [0.01, 1.0]}}
  sgd: {lr: {log_uniform: [0.01, 1.0]}, weight_decay: {uniform: [1.0e-5, 1.0e-4]}, momentum: 0.9}
sampler: sobol
samples: 16
epochs: 2
seed: 3
"""


def test_default_study_is_builtin_and_plans_at_least_8_per_pair():
    assert "default" in builtin_names()
    spec = load_spec(None)
    plan = plan_trials(spec)
    summary = plan_summary(spec, plan)
    assert summary["trials"] == len(plan)
    for per_opt in summary["counts"].values():
        assert set(per_opt) == {"adamw", "sgd"}
        assert all(n >= 8 for n in per_opt.values())


@pytest.mark.parametrize("sampler", ["random", "sobol", "grid"])
def test_plan_is_deterministic_and_ids_unique(sampler):
    spec = parse_spec(SPEC, "t", [f"sampler={sampler}"])
    first, second = plan_trials(spec), plan_trials(parse_spec(SPEC, "t", [f"sampler={sampler}"]))
    assert [c.trial_id for c in first] == [c.trial_id for c in second]
    assert len({c.trial_id for c in first}) == len(first)


def test_models_see_the_same_points():
    plan = plan_trials(parse_spec(SPEC, "t"))
    for optimizer in ("adamw", "sgd"):
        points = {m: sorted((c.lr, c.weight_decay, c.seed) for c in plan if c.model == m and c.optimizer == optimizer)
                  for m in ("vit_p_tiny", "vit_c_tiny")}
        assert points["vit_p_tiny"] == points["vit_c_tiny"]
        assert len(points["vit_p_tiny"]) == 16


def test_model_specific_ranges_keep_the_pairing_in_quantiles():
    text = SPEC.replace("models: [vit_p_tiny, vit_c_tiny]",
                        "models: [vit_p_tiny, {name: regnety_1gf, optimizers: {adamw: {lr: {log_uniform: [1.0e-3, 1.0e-1]}}}}]")
    plan = plan_trials(parse_spec(text, "t"))
    vit = [c for c in plan if c.model == "vit_p_tiny" and c.optimizer == "adamw"]
    cnn = [c for c in plan if c.model == "regnety_1gf" and c.optimizer == "adamw"]
    for a, b in zip(vit, cnn):
        assert b.lr == pytest.approx(a.lr * 10)  # the same quantile of a range 10x higher
        assert a.weight_decay == b.weight_decay


def test_log_uniform_bounds_and_spread():
    spec = parse_spec(SPEC, "t", ["samples=256", "sampler=random"])
    lrs = [c.lr for c in plan_trials(spec) if c.optimizer == "adamw" and c.model == "vit_p_tiny"]
    assert min(lrs) >= 1e-4 and max(lrs) <= 1e-2
    logs = [math.log10(lr) for lr in lrs]
    below_middle = sum(v < -3 for v in logs) / len(logs)
    assert 0.4 < below_middle < 0.6  # log-uniform: half the mass below the geometric middle


def test_grid_includes_end_points_and_choices():
    text = SPEC + "train: {mixup: {choice: [0.0, 0.8]}}\n"
    spec = parse_spec(text, "t", ["sampler=grid", "samples=9"])
    plan = [c for c in plan_trials(spec) if c.model == "vit_p_tiny" and c.optimizer == "adamw"]
    assert len(plan) == 3 * 3 * 2
    assert {c.train.mixup for c in plan} == {0.0, 0.8}
    assert min(c.lr for c in plan) == pytest.approx(1e-4) and max(c.lr for c in plan) == pytest.approx(1e-2)
    assert all(c.extras["mixup"] == c.train.mixup for c in plan)


def test_epochs_list_and_repeats_multiply_the_plan():
    spec = parse_spec(SPEC, "t", ["epochs=[1,2,4]", "repeats=2", "samples=4"])
    plan = plan_trials(spec)
    assert len(plan) == 2 * 2 * 4 * 3 * 2
    assert plan_summary(spec, plan)["epochs"] == [1, 2, 4]
    seeds = {c.seed for c in plan if c.model == "vit_p_tiny" and c.optimizer == "adamw" and c.epochs == 1}
    assert len(seeds) == 8


def test_map_unit_kinds():
    assert map_unit(Distribution(kind="log_uniform", values=(1e-3, 1e-1)), 0.5) == pytest.approx(1e-2)
    assert map_unit(Distribution(kind="uniform", values=(0, 10)), 0.25) == 2.5
    assert map_unit(Distribution(kind="int_uniform", values=(1, 3)), 0.999) == 3
    assert map_unit(Distribution(kind="choice", values=("a", "b")), 0.0) == "a"


@pytest.mark.parametrize("override, fragment", [
    ("optimizers.adamw.lr={log_uniform: [0, 1]}", "positive"),
    ("optimizers.adamw.lr={uniform: [2, 1]}", "low < high"),
    ("optimizers.adamw.lr={loguniform: [1, 2]}", "unknown distribution"),
    ("optimizers.adam={lr: 1, weight_decay: 0}", "unknown optimizer 'adam'"),
    ("samples=0", "samples"),
    ("sampler=halton", "sampler"),
    ("train.mixupp=0.8", "did you mean 'mixup'"),
    ("epochs=[]", "epochs"),
    ("name=bad/name", "name"),
])
def test_invalid_specs_name_the_key(override, fragment):
    with pytest.raises(SpecError) as info:
        parse_spec(SPEC, "t", [override])
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_top_level_key_suggests():
    with pytest.raises(SpecError, match="did you mean 'samples'"):
        parse_spec(SPEC + "sampels: 3\n", "t")


def test_yaml_python_tags_are_refused():
    with pytest.raises(SpecError, match="invalid YAML"):
        parse_spec("name: !!python/object/apply:os.system ['true']\n", "t")


def test_store_roundtrip_and_atomic_layout(tmp_path):
    store = ResultsStore(tmp_path / "s", {"mixup": extra_column_type([0.0, 0.8])})
    for i, status in enumerate(["ok", "diverged", "failed"]):
        store.write_trial({"study": "s", "trial_id": f"id{i}", "model": "m", "optimizer": "sgd", "lr": 0.1,
                           "weight_decay": 1e-4, "epochs": 2, "seed": i, "batch_size": 8, "status": status,
                           "top1_err": [5.0, 90.0, math.nan][i], "mixup": 0.8, "error": ["", "", "boom"][i]},
                          [{"epoch": 1, "train_loss": 1.0, "top1_err": 9.0, "lr": 0.1, "elapsed_s": 1.0}])
    store.write_trial({"study": "s", "trial_id": "id0", "model": "m", "optimizer": "sgd", "status": "ok",
                       "top1_err": 4.0}, [])  # a re-write replaces, never duplicates
    assert store.finished_ids() == {"id0", "id1", "id2"}
    trials = pd.read_parquet(tmp_path / "s" / "trials.parquet")
    assert len(trials) == 3 and set(trials["status"]) == {"ok", "diverged", "failed"}
    assert trials.set_index("trial_id").loc["id0", "top1_err"] == 4.0
    assert list(trials.columns[:3]) == ["study", "trial_id", "model"]
    assert not [p for p in (tmp_path / "s").rglob(".tmp-*")]
    assert all(p.stat().st_mode & 0o044 for p in (tmp_path / "s").rglob("*.parquet"))  # readable by others
    results = read_study(tmp_path / "s")
    assert len(results.curves) == 2
    with pytest.raises(ValueError, match="status"):
        store.write_trial({"study": "s", "trial_id": "x", "status": "weird"}, [])


def test_help_spec_lists_every_key_with_its_meaning():
    from conftest import run_main
    from stability.sweep.__main__ import main as sweep_main

    out = run_main(sweep_main, "--help-spec")
    assert out.returncode == 0
    keys = {line.split()[0] for line in out.stdout.splitlines()}
    assert {"samples", "train.mixup", "train.distillation.teacher_recipe.epochs", "train.patch_losses.cosine",
            "resources.fused_trials", "dataset.img_size"} <= keys
    assert "(default 0.5)" in next(line for line in out.stdout.splitlines() if line.startswith("train.distillation.alpha"))


def test_trial_id_ignores_knobs_left_at_their_defaults():
    from stability.spec.trial import TrialConfig

    base = dict(model="vit_p_tiny", optimizer="sgd", lr=0.1, weight_decay=1e-5, epochs=2)
    plain = TrialConfig(**base)
    assert TrialConfig(**base, train={"mixup": 0.0, "patch_losses": {"cosine": 0.0}}).trial_id == plain.trial_id
    assert TrialConfig(**base, train={"mixup": 0.2}).trial_id != plain.trial_id
    assert TrialConfig(**{**base, "lr": 0.2}).trial_id != plain.trial_id


def test_study_yaml_records_every_sampled_knob_with_its_column_and_bounds(tmp_path):
    spec = parse_spec(SPEC, "t", ["train.distillation.alpha={uniform: [0.1, 0.9]}", "train.mixup={choice: [0.0, 0.8]}",
                                  "model_args.drop_rate={uniform: [0.0, 0.2]}"])
    store = ResultsStore(tmp_path / "s")
    store.write_spec(spec, {"stability": "test"})
    knobs = store.read_spec()["knobs"]
    by_column = {(k["optimizer"], k["model"], k["column"]): k for k in knobs}
    plan_columns = set().union(*(cfg.extras for cfg in plan_trials(spec))) | {"lr", "weight_decay"}
    assert {k["column"] for k in knobs} <= plan_columns  # the columns the trials table will have
    some_model = spec.model_entries()[0].name
    alpha = by_column[("adamw", some_model, "distillation.alpha")]
    assert (alpha["path"], alpha["kind"], alpha["values"]) == ("train.distillation.alpha", "uniform", [0.1, 0.9])
    assert by_column[("adamw", some_model, "mixup")]["kind"] == "choice"
    assert by_column[("adamw", some_model, "drop_rate")]["path"] == "model_args.drop_rate"
    lr = by_column[("adamw", some_model, "lr")]
    assert lr["path"] == "opt.lr" and lr["values"] == list(spec.optimizers["adamw"]["lr"].values)


def test_study_yaml_written_before_knob_records_still_gives_them(tmp_path):
    """A folder from before `knobs` existed: the reader derives them from the saved spec."""
    import yaml

    spec = parse_spec(SPEC, "t", ["train.distillation.alpha={uniform: [0.1, 0.9]}"])
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "study.yaml").write_text(yaml.safe_dump({"schema_version": 1, "spec": spec.resolved(), "versions": {}}))
    knobs = ResultsStore(folder).read_spec()["knobs"]
    assert {"lr", "weight_decay", "distillation.alpha"} == {k["column"] for k in knobs if k["kind"] != "choice"}


def test_optimizer_arguments_are_typed_and_belong_to_their_optimizer():
    from stability.spec import TrialConfig

    base = dict(model="vit_p_tiny", lr=0.1, weight_decay=1e-5, epochs=2)
    sgd = TrialConfig(**base, optimizer="sgd", optimizer_args={"momentum": 0.8})
    assert sgd.optimizer_kwargs() == {"momentum": 0.8, "nesterov": True}
    assert TrialConfig(**base, optimizer="adamw").optimizer_kwargs() == {"betas": (0.9, 0.999), "eps": 1e-8}
    with pytest.raises(ValueError, match="adamw takes no momentum"):
        TrialConfig(**base, optimizer="adamw", optimizer_args={"momentum": 0.9})
    with pytest.raises(SpecError, match="unknown key 'momentum' in optimizers.adamw; valid: lr, weight_decay, betas, eps"):
        parse_spec(SPEC, "t", ["optimizers.adamw.momentum=0.9"])
    with pytest.raises(SpecError, match=r"momentum must be in \[0, 1\)"):
        plan_trials(parse_spec(SPEC, "t", ["optimizers.sgd.momentum=1.5"]))
