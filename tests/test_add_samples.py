"""`--add-samples N`: a study grows by N points per optimizer; the sequence continues, finished trials
keep their ids and results, and only the new trials run."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from conftest import TESTS
from stability.results.__main__ import main as results_main
from stability.results.store import ResultsStore
from stability.sampling import plan_trials
from stability.spec import load_spec
from stability.sweep.__main__ import main

TINY = str(TESTS / "data" / "tiny.yaml")


@pytest.mark.parametrize("sampler", ["sobol", "random"])
def test_a_larger_plan_starts_with_the_smaller_one(sampler):
    small = plan_trials(load_spec(TINY, [f"sampler={sampler}", "samples=3"]))
    large = plan_trials(load_spec(TINY, [f"sampler={sampler}", "samples=5"]))
    ids = {cfg.trial_id for cfg in large}
    assert {cfg.trial_id for cfg in small} <= ids and len(large) > len(small)
    assert {(c.trial_id, c.point) for c in small} <= {(c.trial_id, c.point) for c in large}


def saved_study(tmp_path, *overrides: str) -> str:
    spec = load_spec(TINY, list(overrides))
    ResultsStore(tmp_path / "runs" / spec.name).write_spec(spec, {"stability": "test"})
    return str(tmp_path / "runs")


def test_dry_run_says_what_would_be_added(tmp_path, capsys):
    storage = saved_study(tmp_path, "samples=2")
    assert main([TINY, "--storage", storage, "--add-samples", "3", "--dry-run"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["added"] == {"samples": [2, 5], "trials": len(plan_trials(load_spec(TINY, ["samples=5"])))
                                - len(plan_trials(load_spec(TINY, ["samples=2"])))}


@pytest.mark.parametrize("overrides, fragment", [((), "nothing to extend"), (("sampler=grid",), "grid study")])
def test_grid_studies_and_missing_studies_are_refused(overrides, fragment, tmp_path, capsys):
    storage = saved_study(tmp_path, *overrides) if overrides else str(tmp_path / "runs")
    with pytest.raises(SystemExit) as info:
        main([TINY, *(a for o in overrides for a in ("--set", o)), "--storage", storage, "--add-samples", "2"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and fragment in err and len(err.strip().splitlines()) == 1


@pytest.mark.ray
def test_only_the_new_trials_run_and_the_old_ones_keep_their_rows(tiny_study, sweep, tmp_path):
    """The shared finished tiny study (2 samples), copied and compacted, grows by one sample: its few
    files are read as the sweep's own and left as they are."""
    shutil.copytree(tiny_study["study"], tmp_path / "tiny")
    trials_dir = tmp_path / "tiny" / "trials.parquet"
    assert results_main(["compact", str(tmp_path / "tiny")]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in trials_dir.glob("*.parquet")}
    assert len(before) == 1
    grown = sweep(TINY, "--storage", tmp_path, "--add-samples", "1")
    assert grown.returncode == 0, grown.stderr[-2000:]
    assert "8 of 12 trials already finished" in grown.stderr
    after = {p.name: p.stat().st_mtime_ns for p in trials_dir.glob("*.parquet")}
    assert all(after[name] == mtime for name, mtime in before.items())  # never re-run nor rewritten
    expected = plan_trials(load_spec(TINY, ["samples=3"]))
    trials = pd.read_parquet(trials_dir)
    assert sorted(trials["trial_id"]) == sorted(cfg.trial_id for cfg in expected)  # as if planned with 3 from the start
    assert ResultsStore(tmp_path / "tiny").read_spec()["spec"]["samples"] == 3
