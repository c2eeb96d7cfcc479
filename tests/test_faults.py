"""Faults during a study, on a real local Ray cluster: crashing trials, Ctrl-C and SIGTERM, and many
trials finishing at once (a killed trial worker: test_resume.py, where its trial must also end
exactly as if uninterrupted)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO, TESTS, wait_for

TINY = str(TESTS / "data" / "tiny.yaml")
pytestmark = pytest.mark.ray


def test_crashing_trials_are_retried_then_recorded_failed_and_many_finish_at_once(sweep, tmp_path):
    """4 one-epoch trials, all at once on 2 CPUs; the two drawing the broken depth raise."""
    out = sweep(TINY, "--storage", tmp_path, "--set", "name=faults", "--set", "samples=1", "--set", "epochs=1",
                "--set", "model_args.depth={choice: [2, broken]}",
                "--set", "resources.cpus_per_worker=0.5", "--set", "resources.max_concurrent=4",
                "--set", "resources.max_failures=1")
    assert out.returncode == 0, out.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "faults" / "trials.parquet")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    failed = trials[trials["status"] == "failed"]
    assert len(failed) == (trials["depth"] == "broken").sum() > 0
    assert (failed["error"].str.len() > 0).all()
    assert set(trials.loc[trials["depth"] != "broken", "status"]) <= {"ok", "diverged"}
    assert f"{len(failed)} trial(s) failed" in out.stderr


def test_a_stop_signal_keeps_finished_trials_prints_resume_and_exits_with_its_code(ray_cluster, tmp_path):
    """Ctrl-C, and SIGTERM (a scheduler's stop, `kill`), take one path: the trials stop, finished ones are
    kept, the resume command is printed and the study lock released; no Ray signal dump, no traceback.
    Two sweeps at once, each sent its signal once it has stored a trial."""
    cases = {"interrupted": (signal.SIGINT, 130), "terminated": (signal.SIGTERM, 143)}
    drivers = {}
    for name in cases:
        args = [sys.executable, "-m", "stability.sweep", TINY, "--address", ray_cluster["address"],
                "--storage", str(tmp_path), "--set", f"name={name}", "--set", "epochs=3", "--set", "samples=2"]
        drivers[name] = subprocess.Popen(args, cwd=REPO, env=ray_cluster["env"], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
    running = dict(drivers)

    def signal_each_once_a_trial_is_stored() -> bool:
        for name in list(running):
            trials_dir = tmp_path / name / "trials.parquet"
            if trials_dir.is_dir() and any(trials_dir.glob("*.parquet")):
                running.pop(name).send_signal(cases[name][0])
        return not running

    try:
        assert wait_for(signal_each_once_a_trial_is_stored, timeout=300, every=0.2), f"no trial of {sorted(running)}"
        errs = {name: driver.communicate(timeout=120)[1] for name, driver in drivers.items()}
    finally:
        for driver in drivers.values():
            driver.kill()
    for name, (_, code) in cases.items():
        err = errs[name]
        assert drivers[name].returncode == code, err[-3000:]
        assert f"python -m stability.sweep {TINY} --storage {tmp_path} --address {ray_cluster['address']} --resume" in err
        assert "Traceback" not in err and "SIGTERM" not in err
        kept = pd.read_parquet(tmp_path / name / "trials.parquet")
        assert 1 <= len(kept) < 8 and kept["trial_id"].is_unique
        assert not (tmp_path / name / ".lock").exists()
