"""Mid-trial checkpoints through the sweep, on a real local Ray cluster: a killed trial worker and a
killed driver (then `--resume`) both continue from the trial's last checkpoint, and the trial ends
with exactly the result and curve of the same trial run without interruption (CPU, one thread)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, trial_workers, wait_for
from stability.sampling import plan_trials
from stability.spec import load_spec
from stability.train.checkpoint import STATE_FILE

pytestmark = pytest.mark.ray

EPOCHS = 8
STUDY = f"""
name: resume
dataset: {{name: digits, img_size: 8}}
models: [vit_c_tiny]
optimizers:
  adamw: {{lr: {{log_uniform: [1.0e-3, 4.0e-3]}}, weight_decay: 0.05}}
sampler: sobol
samples: SAMPLES
epochs: {EPOCHS}
seed: 0
train: {{batch_size: 64, warmup_epochs: 1, mixup: MIXUP}}
resources: {{workers_per_trial: 1, cpus_per_worker: 1, max_failures: 2, checkpoint_every: 1, fused_trials: FUSED}}
"""
OUTCOME = ["status", "top1_err", "best_top1_err", "train_loss", "patch_cos_sim"]


def write_study(tmp_path, samples: int = 1, fused: int = 1) -> str:
    path = tmp_path / "resume.yaml"
    mixup = 0.0 if fused > 1 else 0.2  # the fused engine trains without mixup
    path.write_text(STUDY.replace("SAMPLES", str(samples)).replace("FUSED", str(fused)).replace("MIXUP", str(mixup)))
    return str(path)


def reference(study: str, fused: bool) -> dict[str, dict]:
    """Each trial run in this process without interruption (one thread, as the sweep's trials)."""
    torch.set_num_threads(1)
    cfgs = plan_trials(load_spec(study))
    if fused:
        from stability.train.fused.engine import run_fused_trials

        return {cfg.trial_id: m for cfg, m in zip(cfgs, run_fused_trials(cfgs, device="cpu"))}
    from stability.train.engine import run_trial

    return {cfg.trial_id: run_trial(cfg, device="cpu") for cfg in cfgs}


def saved_state(folder) -> dict | None:
    states = [torch.load(p, map_location="cpu", weights_only=False) for p in folder.glob(f"*/{STATE_FILE}")]
    return states[0] if states else None


def state_after(root, epoch: int) -> dict | None:
    """The checkpoint in the study folder `root` when it holds epoch `epoch` or a later one, else None."""
    try:
        state = saved_state(root / "checkpoints")
    except Exception:  # replaced while being read
        return None
    return state if state is not None and state["epoch"] >= epoch else None


def checkpoint_after(root, epoch: int) -> dict:
    """Wait for a checkpoint of at least `epoch`; returns it."""
    found: list[dict] = []
    assert wait_for(lambda: found.append(state_after(root, epoch)) or found[-1] is not None, timeout=180, every=0.1), \
        "no checkpoint was written"
    return found[-1]


def check_resumed_exactly(root, expected: dict[str, dict], saved: dict) -> None:
    trials = pd.read_parquet(root / "trials.parquet").set_index("trial_id")
    curves = pd.read_parquet(root / "curves.parquet")
    assert sorted(trials.index) == sorted(expected)
    for trial_id, metrics in expected.items():
        row = trials.loc[trial_id]
        for key in OUTCOME:  # exactly equal (NaN equals NaN)
            np.testing.assert_equal(row[key], metrics[key], err_msg=key)
        curve = curves[curves["trial_id"] == trial_id].sort_values("epoch")
        assert list(curve["epoch"]) == list(range(1, EPOCHS + 1))  # every epoch once
        assert list(curve["top1_err"]) == [p["top1_err"] for p in metrics["curve"]]
        assert list(curve["train_loss"]) == [p["train_loss"] for p in metrics["curve"]]
    # the saved epochs kept the times of the run that wrote them: the trial continued, it did not start over
    members = saved["members"] if "members" in saved else [saved["progress"]]
    for member in members:
        points = member["curve"]
        trial = curves.merge(pd.DataFrame(points)[["epoch", "elapsed_s", "top1_err"]], on=["epoch", "top1_err"])
        assert len(trial) >= len(points) and set(points[-1].keys()) >= {"elapsed_s"}
        assert sorted(trial["elapsed_s_x"]) == sorted(trial["elapsed_s_y"])
    assert not (root / "checkpoints").exists() or not any((root / "checkpoints").iterdir())  # deleted once stored


def start_sweep(study, ray_cluster, storage, *extra) -> subprocess.Popen:
    args = [sys.executable, "-m", "stability.sweep", study, "--address", ray_cluster["address"], "--storage", str(storage),
            *extra]
    return subprocess.Popen(args, cwd=REPO, env=ray_cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_a_killed_trial_worker_resumes_from_its_checkpoint_with_the_uninterrupted_result(ray_cluster, tmp_path):
    study = write_study(tmp_path)
    expected = reference(study, fused=False)
    driver = start_sweep(study, ray_cluster, tmp_path)
    try:
        saved = checkpoint_after(tmp_path / "resume", 3)
        workers = trial_workers(ray_cluster["tmpdir"])
        assert workers, "no trial worker of this cluster"
        os.kill(workers[0], signal.SIGKILL)
        _, err = driver.communicate(timeout=300)
    finally:
        driver.kill()
    assert driver.returncode == 0, err[-3000:]
    check_resumed_exactly(tmp_path / "resume", expected, saved)


def test_a_killed_driver_then_resume_continues_each_running_trial_from_its_checkpoint(ray_cluster, tmp_path):
    """A lone trial and a fused group, each in a study of its own, swept at the same time (one CPU
    each); each driver is killed once its trial has a checkpoint, then both studies are resumed."""
    cases = {}
    for name, fused in (("one-trial", False), ("fused-group", True)):
        folder = tmp_path / name
        folder.mkdir()
        study = write_study(folder, samples=2 if fused else 1, fused=2 if fused else 1)
        cases[name] = {"folder": folder, "study": study, "expected": reference(study, fused=fused)}
    drivers = {name: start_sweep(case["study"], ray_cluster, case["folder"]) for name, case in cases.items()}
    running = dict(drivers)

    def kill_each_once_checkpointed() -> bool:
        for name in list(running):
            state = state_after(cases[name]["folder"] / "resume", 3)
            if state is not None:
                cases[name]["saved"] = state
                running.pop(name).send_signal(signal.SIGKILL)
        return not running

    try:
        assert wait_for(kill_each_once_checkpointed, timeout=180, every=0.1), f"no checkpoint of {sorted(running)}"
        for driver in drivers.values():
            driver.wait(timeout=60)
    finally:
        for driver in drivers.values():
            driver.kill()
    for case in cases.values():
        running_file = (case["folder"] / "resume" / "running.json").read_text()
        assert all(trial_id in running_file for trial_id in case["expected"])  # the folder said which trials ran
    again = {name: start_sweep(case["study"], ray_cluster, case["folder"], "--resume") for name, case in cases.items()}
    try:
        for name, driver in again.items():
            _, err = driver.communicate(timeout=300)
            assert driver.returncode == 0, f"{name}: {err[-3000:]}"
    finally:
        for driver in again.values():
            driver.kill()
    for case in cases.values():
        check_resumed_exactly(case["folder"] / "resume", case["expected"], case["saved"])
