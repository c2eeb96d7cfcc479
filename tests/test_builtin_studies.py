"""Built-in studies (search_spaces/*.yaml): each parses, plans and names known models; the
paper-sized ones have the paper's shape; the factor studies vary the factor they are about;
docs/studies.md lists every study with the trial count its plan really has. No Ray, no training."""

from __future__ import annotations

import importlib.resources
import re
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path

import pytest

from stability.sampling import plan_trials
from stability.spec import Distribution, builtin_names, load_spec
from stability.sweep.checks import check_names

STUDIES = builtin_names()
DOCS = Path(__file__).resolve().parents[1] / "docs" / "studies.md"
FAMILIES = ("paper", "cifar10", "digits")
LR_WD_STUDY = {"paper": "paper_lr_wd", "cifar10": "cifar10_lr_wd", "digits": "default"}


@lru_cache(maxsize=None)
def plan(name: str):
    return plan_trials(load_spec(name))


def yaml_text(name: str) -> str:
    return (importlib.resources.files("stability.search_spaces") / f"{name}.yaml").read_text()


def values(name: str, column: str) -> Counter:
    """How often each value of a result column (an extra knob) occurs in the plan."""
    return Counter(cfg.extras[column] for cfg in plan(name))


def test_every_axis_has_paper_and_proxy_studies():
    for family in FAMILIES:
        for axis in ("optimizer", "length", "peak"):
            assert f"{family}_{axis}" in STUDIES
        assert LR_WD_STUDY[family] in STUDIES
    assert {"deit_distillation", "cait_layerscale", "over_smoothing"} <= set(STUDIES)


@pytest.mark.parametrize("name", STUDIES)
def test_study_parses_plans_and_names_known_models(name):
    spec = load_spec(name)
    assert spec.name == name
    check_names(spec)  # every model and the dataset resolve (raises SpecError otherwise)
    trials = plan(name)
    assert trials
    assert len({cfg.trial_id for cfg in trials}) == len(trials)
    assert {cfg.model for cfg in trials} == {entry.name for entry in spec.model_entries()}


@pytest.mark.parametrize("name", STUDIES)
def test_study_has_header_comment_and_one_line_description(name):
    text = yaml_text(name)
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert len(header) >= 3, f"{name}: the file starts with a comment of what it reproduces"
    assert "expect" in " ".join(header).lower(), f"{name}: the header says what result to expect"
    description = load_spec(name).description
    assert description.strip() and "\n" not in description.strip()


def test_paper_lr_wd_plans_1152_trials():
    trials = plan("paper_lr_wd")
    assert len(trials) == 1152
    assert {cfg.epochs for cfg in trials} == {50}
    per_pair = Counter((cfg.model, cfg.optimizer) for cfg in trials)
    assert len(per_pair) == 9 * 2 and set(per_pair.values()) == {64}


@pytest.mark.parametrize("family", FAMILIES)
def test_training_length_studies_span_an_8x_range(family):
    epochs = sorted({cfg.epochs for cfg in plan(f"{family}_length")})
    assert len(epochs) == 4 and all(b == 2 * a for a, b in zip(epochs, epochs[1:]))
    if family != "digits":
        assert (epochs[0], epochs[-1]) == (50, 400)
    else:  # the paper's 50..400 scaled down to 15..120 (15: the default study's length until it
        # shipped with 2 seeds at 10 epochs)
        assert (epochs[0], epochs[-1]) == (15, 120)


@pytest.mark.parametrize("family", FAMILIES)
def test_optimizer_length_and_peak_studies_use_fixed_tuned_values_inside_the_lr_wd_ranges(family):
    ranges = load_spec(LR_WD_STUDY[family])
    tuned: dict[tuple[str, str], set] = defaultdict(set)
    for axis in ("optimizer", "length", "peak"):
        for cfg in plan(f"{family}_{axis}"):
            tuned[(cfg.model, cfg.optimizer)].add((cfg.lr, cfg.weight_decay))
    for (model, optimizer), points in tuned.items():
        assert len(points) == 1, f"{family}: {model}/{optimizer} has one tuned point across studies, got {points}"
        (lr, wd), = points
        entry = next((e for e in ranges.model_entries() if e.name == model), None)
        knobs = {**ranges.optimizers[optimizer], **(entry.optimizers.get(optimizer, {}) if entry else {})}
        for knob, value in (("lr", lr), ("weight_decay", wd)):
            dist = knobs[knob]
            assert isinstance(dist, Distribution)
            low, high = dist.values
            assert low <= value <= high, f"{family}: {model}/{optimizer} {knob}={value} outside {dist.values}"


@pytest.mark.parametrize("family", FAMILIES)
def test_optimizer_studies_pair_adamw_and_sgd_for_both_stems(family):
    trials = plan(f"{family}_optimizer")
    by_model = defaultdict(set)
    for cfg in trials:
        by_model[cfg.model].add((cfg.optimizer, cfg.epochs))
    assert any(m.startswith("vit_p") for m in by_model) and any(m.startswith("vit_c") for m in by_model)
    length_epochs = {cfg.epochs for cfg in plan(f"{family}_length")}
    for model, runs in by_model.items():
        assert runs == {(opt, e) for opt in ("adamw", "sgd") for e in length_epochs}, model


@pytest.mark.parametrize("family", FAMILIES)
def test_peak_studies_train_longest_with_at_least_the_length_studies_models(family):
    peak = plan(f"{family}_peak")
    assert {cfg.epochs for cfg in peak} == {max(cfg.epochs for cfg in plan(f"{family}_length"))}
    assert {cfg.model for cfg in peak} >= {cfg.model for cfg in plan(f"{family}_length")}


@pytest.mark.parametrize("name", ["default", "paper_lr_wd", "cifar10_lr_wd"])
def test_lr_wd_studies_sample_lr_and_wd(name):
    trials = plan(name)
    for optimizer in {cfg.optimizer for cfg in trials}:
        rows = [cfg for cfg in trials if cfg.optimizer == optimizer]
        assert len({cfg.lr for cfg in rows}) >= 8 and len({cfg.weight_decay for cfg in rows}) >= 8


def test_over_smoothing_crosses_the_three_patch_losses():
    trials = plan("over_smoothing")
    combos = Counter((cfg.model, cfg.train.patch_losses.cosine, cfg.train.patch_losses.contrastive,
                      cfg.train.patch_losses.mixing) for cfg in trials)
    for loss in ("cosine", "contrastive", "mixing"):
        column = values("over_smoothing", f"patch_losses.{loss}")
        assert 0 in column and any(v > 0 for v in column), loss
    for model in {cfg.model for cfg in trials}:
        assert len([c for c in combos if c[0] == model]) == 8  # every on/off combination per model
    assert all(cfg.train.mixup == 0 and cfg.train.cutmix == 0 for cfg in trials)


def test_deit_distillation_crosses_every_type_with_every_lr_wd_point():
    trials = plan("deit_distillation")
    assert set(values("deit_distillation", "distillation.type")) == {"none", "soft", "hard"}
    assert {cfg.train.distillation.teacher for cfg in trials} == {"regnety_1gf"}
    types = defaultdict(set)
    for cfg in trials:
        types[(cfg.model, cfg.lr, cfg.weight_decay)].add(cfg.train.distillation.type)
    assert len(types) >= 2 * 9 and all(t == {"none", "soft", "hard"} for t in types.values())
    assert any("distilled" in cfg.model for cfg in trials) and any("distilled" not in cfg.model for cfg in trials)


def test_cait_layerscale_crosses_init_values_with_lr_at_two_depths():
    trials = plan("cait_layerscale")
    inits = defaultdict(set)
    for cfg in trials:
        assert cfg.model.startswith("cait_")
        inits[(cfg.model, cfg.lr)].add(cfg.model_args["init_values"])
    levels = set(values("cait_layerscale", "init_values"))
    assert min(levels) <= 1e-5 and max(levels) >= 1.0 and len(levels) >= 4
    assert all(v == levels for v in inits.values())
    assert len({cfg.model for cfg in trials}) == 2 and len({cfg.lr for cfg in trials}) >= 4


def test_docs_list_every_study_with_its_planned_trial_count():
    text = DOCS.read_text()
    rows = {m.group(1): int(m.group(2).replace(",", ""))
            for m in re.finditer(r"^\|\s*`([\w.-]+)`\s*\|[^|]*\|\s*([\d,]+)\s*\|", text, re.MULTILINE)}
    assert set(rows) == set(STUDIES)
    for name, count in rows.items():
        assert count == len(plan(name)), name
    for name in STUDIES:
        assert f"python -m stability.sweep {name}" in text, f"docs: no command for {name}"
