"""`python -m stability.sweep` against a real local Ray cluster: schema, re-runs, kill -9 + resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, TESTS, run_cli, wait_for
from stability.results.__main__ import main as results_main
from stability.sampling import plan_trials
from stability.spec import load_spec

TINY = str(TESTS / "data" / "tiny.yaml")
TRIAL_COLUMNS = ["study", "trial_id", "model", "optimizer", "lr", "weight_decay", "epochs", "seed", "batch_size",
                 "point", "repeat", "status", "top1_err", "best_top1_err", "train_loss", "wall_time_s", "images_per_s", "params",
                 "gflops", "patch_cos_sim", "error"]
CURVE_COLUMNS = ["study", "trial_id", "epoch", "train_loss", "top1_err", "lr", "elapsed_s"]


def _without_ray(tmp_path) -> tuple[dict, object]:
    """An environment whose Ray temp dir is an empty folder: a started Ray node would write its session there."""
    ray_tmp = tmp_path / "ray"
    ray_tmp.mkdir()
    return {**os.environ, "RAY_TMPDIR": str(ray_tmp)}, ray_tmp


def test_dry_run_prints_plan_without_ray_or_files(tmp_path):
    env, ray_tmp = _without_ray(tmp_path)
    out = run_cli("stability.sweep", TINY, "--dry-run", "--storage", str(tmp_path / "runs"), env=env)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout.strip().splitlines()[-1])
    assert plan["trials"] == 8 and plan["epochs"] == [2] and plan["total_epochs"] == 16
    assert plan["counts"] == {"vit_p_tiny": {"adamw": 2, "sgd": 2}, "vit_c_tiny": {"adamw": 2, "sgd": 2}}
    assert plan["trials"] == len(plan_trials(load_spec(TINY)))
    assert not (tmp_path / "runs").exists()
    assert list(ray_tmp.iterdir()) == [], "a dry run must not start Ray"


def test_dead_address_is_refused_with_one_line_before_any_work(tmp_path):
    env, ray_tmp = _without_ray(tmp_path)
    storage = tmp_path / "runs"
    # the timeout only turns a hang (retrying the address forever) into a failure; speed is not measured here
    out = run_cli("stability.sweep", TINY, "--address", "127.0.0.1:9", "--storage", str(storage), env=env, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines() == [out.stderr.strip()], "one line, no traceback"
    assert "127.0.0.1:9" in out.stderr and "no Ray cluster answers" in out.stderr
    assert "Traceback" not in out.stderr
    assert not storage.exists(), "nothing may be written before the address is checked"
    assert list(ray_tmp.iterdir()) == [], "no local Ray may be started instead"


@pytest.mark.ray
def test_sweep_on_cluster_writes_schema_and_reruns_add_nothing(tiny_study, sweep, tmp_path):
    study = tiny_study["study"]
    trials = pd.read_parquet(study / "trials.parquet")
    curves = pd.read_parquet(study / "curves.parquet")
    schema = pq.read_schema(next((study / "trials.parquet").glob("*.parquet")))
    assert schema.names[: len(TRIAL_COLUMNS)] == TRIAL_COLUMNS
    assert "mixup" in schema.names  # a sampled knob becomes a column
    assert list(curves.columns) == CURVE_COLUMNS
    plan = plan_trials(load_spec(TINY))
    assert sorted(trials["trial_id"]) == sorted(c.trial_id for c in plan)
    positions = trials.set_index("trial_id")[["point", "repeat"]].apply(tuple, axis=1).to_dict()
    assert positions == {c.trial_id: (c.point, c.repeat) for c in plan}  # where the plan put each trial
    assert set(trials["status"]) <= {"ok", "diverged"}
    assert len(curves) == 2 * len(trials) and set(curves["epoch"]) == {1, 2}
    assert not curves.duplicated(["trial_id", "epoch"]).any() and set(curves["trial_id"]) == set(trials["trial_id"])
    assert (trials["epochs"] == 2).all() and (trials["study"] == "tiny").all()
    assert trials["top1_err"].between(0, 100).all() and (trials["params"] > 0).all()
    ok = trials[trials["status"] == "ok"].set_index("trial_id")
    last = curves[curves["epoch"] == 2].set_index("trial_id")["top1_err"]
    assert len(ok) > 0 and (ok["top1_err"] == last[ok.index]).all()  # a trial's error is its last epoch's
    saved = yaml.safe_load((study / "study.yaml").read_text())
    assert saved["spec"]["name"] == "tiny" and saved["schema_version"] == 1 and "torch" in saved["versions"]
    assert "report: python -m stability.report" in tiny_study["stderr"]

    storage = tmp_path / "runs"
    shutil.copytree(study, storage / "tiny")
    study = storage / "tiny"
    assert results_main(["compact", str(study), "--rows-per-file", "5"]) == 0  # 8 trials: 2 files
    assert len(list((study / "trials.parquet").iterdir())) == 2
    again = sweep(TINY, "--storage", storage)
    assert again.returncode == 0 and "nothing to run" in again.stderr, again.stderr[-3000:]
    assert "damaged" not in again.stderr and len(list((study / "trials.parquet").iterdir())) == 2
    assert len(pd.read_parquet(study / "trials.parquet")) == len(trials)
    assert len(pd.read_parquet(study / "curves.parquet")) == len(curves)


@pytest.mark.ray
def test_killed_driver_loses_nothing_its_lock_does_not_block_and_resume_completes(ray_cluster, sweep, tmp_path):
    """SIGKILL (no chance to release the study's lock) once two trials are stored; an immediate
    `--resume` takes the dead driver's lock over and runs only what is missing."""
    storage = tmp_path / "runs"
    args = [sys.executable, "-m", "stability.sweep", TINY, "--address", ray_cluster["address"],
            "--storage", str(storage), "--set", "epochs=3", "--set", "samples=1"]
    driver = subprocess.Popen(args, cwd=REPO, env=ray_cluster["env"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    trials_dir = storage / "tiny" / "trials.parquet"
    try:  # the study's 4 trials run one at a time
        assert wait_for(lambda: trials_dir.is_dir() and len(list(trials_dir.glob("*.parquet"))) >= 2, timeout=300,
                        every=0.1)
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    kept = set(pd.read_parquet(trials_dir)["trial_id"])
    plan = plan_trials(load_spec(TINY, ["epochs=3", "samples=1"]))
    assert 2 <= len(kept) < len(plan)
    assert json.loads((storage / "tiny" / ".lock").read_text())["pid"] == driver.pid

    out = sweep(TINY, "--storage", storage, "--set", "epochs=3", "--set", "samples=1", "--resume")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"pid {driver.pid} on host {socket.gethostname()}" in out.stderr and "is gone" in out.stderr
    assert f"{len(kept)} of {len(plan)} trials already finished" in out.stderr
    trials = pd.read_parquet(trials_dir)
    assert len(trials) == len(plan) and trials["trial_id"].is_unique
    assert set(trials["trial_id"]) == {c.trial_id for c in plan}
    curves = pd.read_parquet(storage / "tiny" / "curves.parquet")
    assert not curves.duplicated(["trial_id", "epoch"]).any()
    assert not (storage / "tiny" / ".lock").exists()


@pytest.mark.ray
def test_data_parallel_trial_runs_through_ray_train(sweep, tmp_path):
    """workers_per_trial > 1: a TorchTrainer (gloo on CPUs) runs the engine; its metrics reach the store."""
    out = sweep(TINY, "--storage", tmp_path, "--set", "name=ddp", "--set", "samples=1", "--set", "models=[vit_c_tiny]",
                "--set", "epochs=1", "--set", "optimizers={adamw: {lr: 0.002, weight_decay: 0.05}}",
                "--set", "resources.workers_per_trial=2", "--set", "resources.cpus_per_worker=0.5")
    assert out.returncode == 0, out.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "ddp" / "trials.parquet")
    assert len(trials) == 1 and trials["status"].iloc[0] == "ok"
    assert len(pd.read_parquet(tmp_path / "ddp" / "curves.parquet")) == 1


@pytest.mark.ray
def test_a_trial_that_cannot_be_placed_is_refused(sweep, tmp_path):
    out = sweep(TINY, "--storage", tmp_path, "--set", "resources.workers_per_trial=4")
    assert out.returncode == 2 and "one trial needs 4.01 CPUs" in out.stderr
    assert not (tmp_path / "tiny" / "trials.parquet").exists()


@pytest.mark.ray
def test_fused_trials_write_one_row_each(sweep, tmp_path):
    """resources.fused_trials: the mixup-free trials train in fused groups, the others alone; every
    trial still gets its own row and curve."""
    sets = ["--set", "name=fused", "--set", "resources.fused_trials=4", "--set", "samples=4", "--set", "epochs=1"]
    out = sweep(TINY, "--storage", tmp_path, *sets)
    assert out.returncode == 0, out.stderr[-3000:]
    plan = plan_trials(load_spec(TINY, ["name=fused", "resources.fused_trials=4", "samples=4", "epochs=1"]))
    assert "fused trials: 16 trials in 12 processes (8 alone" in out.stderr
    trials = pd.read_parquet(tmp_path / "fused" / "trials.parquet")
    assert sorted(trials["trial_id"]) == sorted(c.trial_id for c in plan)
    positions = trials.set_index("trial_id")[["point", "repeat"]].apply(tuple, axis=1).to_dict()
    assert positions == {c.trial_id: (c.point, c.repeat) for c in plan}  # where the plan put each trial
    assert set(trials["status"]) <= {"ok", "diverged"} and (trials["mixup"] == 0).sum() >= 2
    curves = pd.read_parquet(tmp_path / "fused" / "curves.parquet")
    assert len(curves) == len(plan) and not curves.duplicated(["trial_id", "epoch"]).any()
