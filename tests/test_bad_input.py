"""Every invalid spec or command line: exit 2, one line naming the fault, nothing written, no Ray."""

from __future__ import annotations

import os

import pytest

from conftest import TESTS
from stability.sweep.__main__ import main

TINY = (TESTS / "data" / "tiny.yaml").read_text()


def spec_with(old: str, new: str) -> str:
    assert old in TINY, old
    return TINY.replace(old, new)


CASES = [
    # (id, spec text or None for the tiny spec, extra argv, fragment the message must contain)
    ("broken-yaml", "name: [unclosed\n", [], "invalid YAML"),
    ("empty-file", "", [], "empty"),
    ("not-a-map", "- a\n- b\n", [], "YAML map"),
    ("python-tag", "name: !!python/object/apply:os.system ['echo hi']\n", [], "invalid YAML"),
    ("typo-top-level", TINY + "sampels: 4\n", [], "did you mean 'samples'"),
    ("typo-train-key", spec_with("mixup:", "mixpu:"), [], "did you mean 'mixup'"),
    ("wrong-type", spec_with("samples: 2", "samples: many"), [], "samples"),
    ("negative-img-size", spec_with("img_size: 8", "img_size: -8"), [], "img_size"),
    ("unknown-model", spec_with("vit_c_tiny]", "vit_q_tiny]"), [], "unknown model 'vit_q_tiny'"),
    ("unknown-optimizer", spec_with("  sgd:", "  lamb:"), [], "unknown optimizer 'lamb'; choose from: adamw, sgd"),
    ("unknown-dataset", spec_with("name: digits", "name: mnist"), [], "unknown dataset 'mnist'; choose from"),
    ("unknown-distribution", spec_with("{log_uniform: [1.0e-3", "{loguniform: [1.0e-3"), [], "unknown distribution 'loguniform'"),
    ("unknown-sampler", spec_with("sampler: sobol", "sampler: halton"), [], "sampler"),
    ("non-positive-log-bound", spec_with("[1.0e-3, 4.0e-3]", "[0.0, 4.0e-3]"), [], "must be positive"),
    ("reversed-range", spec_with("[1.0e-3, 4.0e-3]", "[4.0e-3, 1.0e-3]"), [], "low < high"),
    ("zero-samples", spec_with("samples: 2", "samples: 0"), [], "samples"),
    ("negative-repeats", TINY + "repeats: -1\n", [], "repeats"),
    ("zero-epochs", spec_with("epochs: 2", "epochs: 0"), [], "epochs"),
    ("empty-epochs-list", spec_with("epochs: 2", "epochs: []"), [], "epochs"),
    ("missing-lr", spec_with("adamw: {lr: {log_uniform: [1.0e-3, 4.0e-3]}, ", "adamw: {"), [], "lr is required"),
    ("missing-dataset-files", spec_with("{name: digits, img_size: 8}", "{name: cifar10, root: /nonexistent/cifar}"), [],
     "/nonexistent/cifar"),
    ("bad-set-syntax", None, ["--set", "samples"], "KEY=VALUE"),
    ("bad-set-key", None, ["--set", "trian.mixup=0.5"], "did you mean 'train'"),
    ("unwritable-storage", None, ["--storage", "/proc/stability-runs"], "cannot write"),
    ("bad-address-format", None, ["--address", "nohostport"], "host:port"),
    ("missing-study-file", "MISSING", [], "does not exist"),
    ("unknown-builtin", "NAME", [], "unknown study 'no_such_study'"),
    ("nothing-to-resume", None, ["--resume"], "nothing to resume"),
]


@pytest.mark.parametrize("case_id, text, argv, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_clear_line(case_id, text, argv, fragment, tmp_path, capsys):
    storage = tmp_path / "runs"
    if text == "MISSING":
        study = str(tmp_path / "nope.yaml")
    elif text == "NAME":
        study = "no_such_study"
    else:
        study_path = tmp_path / "study.yaml"
        study_path.write_text(TINY if text is None else text)
        study = str(study_path)
    if "--storage" not in argv:
        argv = [*argv, "--storage", str(storage)]
    with pytest.raises(SystemExit) as info:
        main([study, *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert fragment in err, err
    assert "Traceback" not in err
    assert 1 <= len(err.strip().splitlines()) <= 2, err
    assert not storage.exists(), "nothing may be written on invalid input"
    import ray

    assert not ray.is_initialized()


def test_dry_run_tolerates_missing_data_but_a_run_does_not(tmp_path, capsys):
    study_path = tmp_path / "study.yaml"
    study_path.write_text(spec_with("{name: digits, img_size: 8}", "{name: imagefolder, root: /nonexistent/inet}"))
    assert main([str(study_path), "--dry-run", "--storage", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert '"warnings"' in out and "/nonexistent/inet" in out
    assert not os.path.exists(tmp_path / "runs")
