"""Hostile input costs bounded time and memory and is refused before anything runs: bounded YAML
(file size, alias expansion, recursion, depth, duplicate keys), a plan counted before it is
built, finite numbers, trial seeds that fit in int64, no model listed twice, short names.

Every case goes through the sweep CLI: exit 2, one line `error: ...` naming the key or file, no
traceback, nothing written, Ray not started. Input that would need much memory (alias bombs, a
huge file, a huge plan) runs in a subprocess under an address-space limit and a time limit, so
a regression fails the test instead of exhausting the machine.
"""

from __future__ import annotations

import functools
import os
import resource
import subprocess
import sys

import pytest
from conftest import REPO, TESTS

from stability.sampling import MAX_TRIALS, check_plan, count_trials, plan_trials
from stability.spec import SpecError, builtin_names, load_spec, parse_spec
from stability.spec.yaml_loader import MAX_ALIAS_VALUES, MAX_SPEC_BYTES, load_yaml
from stability.sweep.__main__ import main

TINY = (TESTS / "data" / "tiny.yaml").read_text()

TIME_LIMIT = 60  # seconds; every refused case below takes about one (most of it imports)
MEMORY_MARGIN = 3 * 2**30 // 2  # address space allowed beyond what the imports take


def spec_with(old: str, new: str) -> str:
    assert old in TINY, old
    return TINY.replace(old, new)


def bomb(indent: str, levels: int = 9) -> str:
    """`levels` anchors of 9 aliases each (9**9 values once expanded) in a few hundred bytes."""
    lines = [f"{indent}a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{indent}a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def flow_bomb(levels: int = 9) -> str:
    """The same bomb as one flow list (fits a choice or a --set value)."""
    inner = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    inner += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(inner) + "]"


def assert_refused(code: int, err: str, fragment: str, storage) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert len(lines[0]) < 600, f"a {len(lines[0]):,}-character message"
    assert fragment in err, err
    assert not storage.exists(), "nothing may be written on invalid input"


# -- cheap cases, in this process ------------------------------------------------------------

CASES = [
    # (id, spec text, extra argv, fragment the message must contain)
    ("duplicate-top-level-key", spec_with("samples: 2", "samples: 2\nsamples: 3"), [], "duplicate key 'samples' (line 11)"),
    ("duplicate-nested-key", spec_with("{lr: {log_uniform: [1.0e-3, 4.0e-3]},", "{lr: {log_uniform: [1.0e-3, 4.0e-3]}, lr: 1,"),
     [], "duplicate key 'lr' (line 7)"),
    ("duplicate-key-in-set-value", TINY, ["--set", "model_args={x: 1, x: 2}"], "--set model_args: duplicate key 'x'"),
    ("recursive-alias", TINY + "model_args: &r {x: *r}\n", [], "recursive alias"),
    ("too-deep", TINY + "model_args: {x: " + "[" * 200 + "]" * 200 + "}\n", [], "nested deeper than 50 levels"),
    ("integer-past-digit-limit", spec_with("samples: 2", "samples: " + "9" * 5000), [], "invalid YAML"),
    ("huge-set-value", TINY, ["--set", "description=" + "x" * MAX_SPEC_BYTES], "--set description: the value is 1,000,0"),
    ("seed-overflow", TINY, ["--set", "seed=99999999999999999999999"], "seed: trial seeds"),
    ("seed-just-over-int64", TINY, ["--set", f"seed={2**63 - 1000 - 2}"], "below 2**63"),
    ("lr-inf", TINY, ["--set", "optimizers.adamw.lr=.inf"], "adamw.lr: must be a finite number, got inf"),
    ("lr-nan", TINY, ["--set", "optimizers.sgd.lr=.nan"], "sgd.lr: must be a finite number, got nan"),
    ("weight-decay-inf", TINY, ["--set", "optimizers.adamw.weight_decay=.inf"], "adamw.weight_decay: must be a finite"),
    ("bound-inf", TINY, ["--set", "optimizers.adamw.lr={log_uniform: [1.0e-3, .inf]}"], "bounds must be finite numbers"),
    ("bound-nan", TINY, ["--set", "optimizers.adamw.weight_decay={uniform: [0, .nan]}"], "bounds must be finite numbers"),
    ("bound-past-float-range", TINY, ["--set", "optimizers.adamw.lr={uniform: [1, 1" + "0" * 400 + "]}"],
     "bounds must be finite numbers"),
    ("bound-inf-as-text", TINY, ["--set", "optimizers.adamw.lr={uniform: [1, inf]}"], "bounds must be finite numbers"),
    ("recipe-nan", TINY, ["--set", "train.mixup=.nan"], "mixup: must be a finite number"),
    ("recipe-nested-inf", TINY, ["--set", "train.distillation.tau=.inf"], "distillation.tau: must be a finite number"),
    ("choice-inf", TINY, ["--set", "train.label_smoothing={choice: [0.1, .inf]}"], "must be a finite number"),
    ("betas-nan", TINY, ["--set", "optimizers.adamw.betas=[0.9, .nan]"], "adamw.betas: must be a finite number"),
    ("per-model-lr-nan", TINY, ["--set", "models=[{name: vit_p_tiny, optimizers: {adamw: {lr: .nan}}}]"],
     "models.0.optimizers: adamw.lr: must be a finite number"),
    ("per-model-args-inf", TINY, ["--set", "models=[{name: vit_p_tiny, model_args: {init_values: .inf}}]"],
     "models.0.model_args: init_values: must be a finite number"),
    ("resources-inf", TINY, ["--set", "resources.cpus_per_worker=.inf"], "resources.cpus_per_worker"),
    ("model-listed-twice", spec_with("[vit_p_tiny, vit_c_tiny]", "[vit_p_tiny, vit_c_tiny, {name: vit_p_tiny}]"), [],
     "models: vit_p_tiny is listed twice"),
    ("model-entry-listed-twice", spec_with("[vit_p_tiny, vit_c_tiny]", "[vit_c_tiny, {name: vit_p_tiny, model_args: "
                                           "{drop_rate: 0.1}}, {name: vit_p_tiny, model_args: {drop_rate: 0.1}}]"),
     [], "models: vit_p_tiny is listed twice"),
    ("epochs-listed-twice", TINY, ["--set", "epochs=[2, 3, 2]"], "epochs: 2 is listed twice"),
    ("long-study-name", TINY, ["--set", "name=" + "n" * 300], "name: at most 100 characters"),
    ("long-model-name", TINY, ["--set", "models=[" + "m" * 300 + "]"], "at most 100 characters"),
    ("mixed-key-distribution", TINY, ["--set", "optimizers.adamw.lr={1: a, b: c}"], "a distribution is a map with one key"),
    ("long-unknown-key", TINY + "? " + "k" * 100_000 + "\n: 1\n", [], "unknown key 'kkkk"),  # explicit: no 1024 cap
    ("long-list-echo", TINY, ["--set", "optimizers.adamw.lr={uniform: [" + ", ".join(["1"] * 20_000) + "]}"],
     "uniform needs two numbers"),
    ("long-unknown-optimizer", TINY, ["--set", "optimizers." + "o" * 5000 + "={lr: 1, weight_decay: 0}"], "unknown optimizer"),
    ("grid-seed-overflow", spec_with("sampler: sobol", "sampler: grid"),
     # 2 x 2 lr/wd points x 2 mixups x 300 label smoothings: 2,400 points, past what samples: 2 suggests
     ["--set", f"seed={2**63 - 1003}", "--set", "train.label_smoothing={choice: [" + ", ".join(str(i / 1000) for i in range(300)) + "]}"],
     "seed: trial seeds (seed + 1000*repeat + point) reach"),
]


@pytest.mark.parametrize("case_id, text, argv, fragment", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_exits_2_with_one_short_line(case_id, text, argv, fragment, tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(text)
    storage = tmp_path / "runs"
    with pytest.raises(SystemExit) as info:
        main([str(study), *argv, "--dry-run", "--storage", str(storage)])
    assert_refused(info.value.code, capsys.readouterr().err, fragment, storage)
    import ray

    assert not ray.is_initialized()


ACCEPTED = [
    # (id, spec text, extra argv): valid input near the new limits still plans
    ("merge-keys", spec_with("[vit_p_tiny, vit_c_tiny]", "[&p {name: vit_p_tiny}, {<<: *p, name: vit_c_tiny}]"), []),
    ("same-model-other-args", spec_with("[vit_p_tiny, vit_c_tiny]", "[vit_p_tiny, {name: vit_p_tiny, model_args: {drop_rate: 0.1}}]"), []),
    ("aliases", spec_with("[vit_p_tiny, vit_c_tiny]", "[{name: vit_p_tiny, optimizers: {adamw: &wide {lr: {log_uniform: "
                          "[1.0e-4, 1.0e-2]}}}}, {name: vit_c_tiny, optimizers: {adamw: *wide}}]"), []),
    ("largest-seed", TINY, ["--set", f"seed={2**63 - 1 - 1000 - 2}"]),
    ("name-of-100", TINY, ["--set", "name=" + "n" * 100]),
]


@pytest.mark.parametrize("case_id, text, argv", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_valid_input_near_the_limits_still_plans(case_id, text, argv, tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(text)
    assert main([str(study), *argv, "--dry-run", "--storage", str(tmp_path / "runs")]) == 0, capsys.readouterr().err
    assert '"trials"' in capsys.readouterr().out


def test_trial_seeds_stay_below_2_to_the_63():
    spec = parse_spec(TINY, "tiny", [f"seed={2**63 - 1 - 1000 - 2}", "repeats=1"])
    assert max(cfg.seed for cfg in plan_trials(spec)) < 2**63


@pytest.mark.parametrize("study", builtin_names())
def test_count_trials_is_the_plan_length(study):
    spec = load_spec(study)
    assert count_trials(spec) == len(plan_trials(spec))


@pytest.mark.parametrize("overrides", [
    ["sampler=grid"],
    ["sampler=grid", "samples=30", "repeats=2", "epochs=[1, 2]"],
    ["sampler=grid", "model_args.x={choice: [1, 2, 3]}", "model_args.y={int_uniform: [1, 9]}"],
    ["sampler=grid", "optimizers.adamw={lr: 0.001, weight_decay: 0.1}", "train.mixup=0"],  # adamw: no sampled knob
    ["sampler=random", "samples=5", "repeats=3"],
    ["optimizers.sgd={lr: 0.1, weight_decay: 0}", "train.mixup=0"],
], ids=["grid", "grid-lists", "grid-choices", "grid-one-point", "random", "sobol-one-point"])
def test_count_trials_matches_the_plan_for_every_sampler(overrides):
    spec = parse_spec(TINY, "tiny", overrides)
    assert count_trials(spec) == len(plan_trials(spec))


def test_the_plan_limit_is_inclusive_and_counted_without_building():
    per_sample = 2 * 2  # tiny: 2 models x 2 optimizers
    assert check_plan(parse_spec(TINY, "tiny", [f"samples={MAX_TRIALS // per_sample}"])) == MAX_TRIALS
    with pytest.raises(SpecError, match=f"the limit is {MAX_TRIALS:,}"):
        check_plan(parse_spec(TINY, "tiny", [f"samples={MAX_TRIALS // per_sample + 1}"]))


def test_aliases_within_the_budget_load():
    data = load_yaml(bomb("", levels=4), "small")  # 9**3 values from 9 + 3 * 9 written ones
    assert len(data["a3"]) == 9 and data["a3"][0][0][0] == ["lol"] * 9


def test_limits_are_named_in_their_messages():
    with pytest.raises(SpecError, match=r"the limit is 1,000,000 bytes \(1 MB\)"):
        parse_spec("x" * (MAX_SPEC_BYTES + 1), "big")
    with pytest.raises(SpecError, match=f"the limit is {MAX_ALIAS_VALUES:,}"):
        parse_spec(TINY + "model_args:\n" + bomb("  ", levels=6), "bomb")


# -- memory-hungry cases, each in a subprocess under an address-space limit ------------------

ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@functools.cache
def memory_limit() -> int:
    """Address space for a refused run: what a valid `--dry-run` of the tiny study takes on this
    machine, measured (about 1.6 GB with CPU torch: the imports), plus MEMORY_MARGIN. An alias
    bomb expanded, or a billion planned trials, needs far more and fails at this limit."""
    code = ("import sys, tempfile\nfrom stability.sweep.__main__ import main\n"
            "with tempfile.TemporaryDirectory() as storage:\n"
            "    assert main([sys.argv[1], '--dry-run', '--storage', storage]) == 0\n"
            "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmPeak:')))")
    out = subprocess.run([sys.executable, "-c", code, str(TESTS / "data" / "tiny.yaml")], check=True, cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=TIME_LIMIT)
    return int(out.stdout.split()[-1]) * 1024 + MEMORY_MARGIN


def run_limited(argv: list[str]) -> subprocess.CompletedProcess:
    limit = memory_limit()
    code = "import sys\nfrom stability.sweep.__main__ import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], check=False, cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=TIME_LIMIT,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))


HEAVY = [
    # (id, spec text (a str, or the size in bytes of a spec padded to it), extra argv, fragment)
    ("alias-bomb-in-dataset-options",
     spec_with("dataset: {name: digits, img_size: 8}", "dataset:\n  name: digits\n  img_size: 8\n  options:\n" + bomb("    ")),
     ["--dry-run"], "YAML aliases expand to"),
    ("alias-bomb-in-model-args", TINY + "model_args:\n" + bomb("  "), ["--dry-run"], "YAML aliases expand to"),
    ("alias-bomb-in-choice", spec_with("mixup: {choice: [0.0, 0.2]}", "mixup: {choice: " + flow_bomb() + "}"),
     ["--dry-run"], "YAML aliases expand to"),
    ("alias-bomb-in-set-value", TINY, ["--dry-run", "--set", "model_args.x=" + flow_bomb()], "--set model_args.x: YAML aliases"),
    ("alias-bomb-without-dry-run", TINY + "model_args:\n" + bomb("  "), [], "YAML aliases expand to"),
    ("spec-of-50-mb", 50_000_000, ["--dry-run"], "the limit is 1,000,000 bytes (1 MB)"),
    ("a-billion-samples", TINY, ["--dry-run", "--set", "samples=1000000000"], "the plan has 4,000,000,000 trials"),
    ("a-trillion-repeats", TINY, ["--dry-run", "--set", "repeats=1000000000000"], "lower samples, repeats, epochs"),
    ("grid-over-25-knobs", spec_with("sampler: sobol", "sampler: grid")
     + "model_args: {" + ", ".join(f"k{i}: {{uniform: [0, 1]}}" for i in range(25)) + "}\n",
     ["--dry-run"], "the plan has 1,073,741,824 trials"),
    ("a-billion-samples-without-dry-run", TINY, ["--set", "samples=1000000000"], "the limit is 1,000,000"),
]


@pytest.mark.parametrize("case_id, text, argv, fragment", HEAVY, ids=[c[0] for c in HEAVY])
def test_memory_hungry_input_is_refused_in_bounded_memory_and_time(case_id, text, argv, fragment, tmp_path):
    study = tmp_path / "study.yaml"
    if isinstance(text, int):
        with study.open("w") as file:
            file.write(TINY + "description: '")
            file.write("x" * (text - len(TINY) - 16))
            file.write("'\n")
        assert study.stat().st_size > MAX_SPEC_BYTES
    else:
        study.write_text(text)
    storage = tmp_path / "runs"
    proc = run_limited([str(study), *argv, "--storage", str(storage)])
    assert_refused(proc.returncode, proc.stderr, fragment, storage)


def test_saved_study_yaml_is_read_through_the_bounded_loader(tmp_path):
    """--resume re-validates the saved spec through parse_spec: a bomb planted in study.yaml is refused."""
    import yaml

    storage = tmp_path / "runs"
    folder = storage / "tiny"
    folder.mkdir(parents=True)
    record = yaml.safe_dump({"schema_version": 1, "spec": load_spec(str(TESTS / "data" / "tiny.yaml")).resolved()},
                            sort_keys=False)
    assert "    options: {}\n" in record
    (folder / "study.yaml").write_text(record.replace("    options: {}\n", "    options:\n" + bomb("      ")))
    before = sorted(p.name for p in folder.iterdir())
    proc = run_limited([str(TESTS / "data" / "tiny.yaml"), "--storage", str(storage), "--resume"])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "study.yaml: YAML aliases expand to" in proc.stderr, proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == before
