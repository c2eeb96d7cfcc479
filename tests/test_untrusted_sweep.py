"""Issue 23 through the sweep, on a real local Ray cluster: a driver killed while a trial has a
checkpoint, that checkpoint copied to a trial that had not started, then `--resume`. The copy is
ignored (said once) and both trials end exactly as uninterrupted runs; then an edited `study.yaml`
is refused by `--resume` (exit 2) and the folder keeps its two rows."""

from __future__ import annotations

import shutil
import signal

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from stability.sampling import plan_trials
from stability.spec import load_spec
from stability.train.checkpoint import STATE_FILE
from test_resume import start_sweep

pytestmark = pytest.mark.ray

STUDY = """
name: trust
dataset: {name: digits, img_size: 8}
models: [vit_c_tiny]
optimizers:
  adamw: {lr: {log_uniform: [1.0e-3, 4.0e-3]}, weight_decay: 0.05}
sampler: sobol
samples: 2
epochs: 5
seed: 0
train: {batch_size: 64, warmup_epochs: 1}
resources: {workers_per_trial: 1, cpus_per_worker: 1, max_failures: 1, checkpoint_every: 1, max_concurrent: 1}
"""
OUTCOME = ["status", "top1_err", "best_top1_err", "train_loss", "patch_cos_sim"]


def _checkpointed(folder) -> str | None:
    """The trial id whose checkpoint holds epoch 2 or later, once one does."""
    for path in folder.glob(f"*/{STATE_FILE}"):
        try:
            if torch.load(path, map_location="cpu", weights_only=True)["epoch"] >= 2:
                return path.parent.name
        except Exception:  # replaced while being read
            pass
    return None


def test_a_copied_checkpoint_is_ignored_on_resume_and_an_edited_study_yaml_is_refused(ray_cluster, sweep, tmp_path):
    from conftest import wait_for
    from stability.train.engine import run_trial

    study = tmp_path / "trust.yaml"
    study.write_text(STUDY)
    plan = plan_trials(load_spec(str(study)))
    torch.set_num_threads(1)
    expected = {cfg.trial_id: run_trial(cfg, device="cpu") for cfg in plan}
    root = tmp_path / "trust"
    driver = start_sweep(str(study), ray_cluster, tmp_path)
    found: list[str] = []
    try:
        assert wait_for(lambda: bool(found.append(_checkpointed(root / "checkpoints")) or found[-1]), 180, 0.1)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        driver.kill()
    a = found[-1]
    b = next(cfg.trial_id for cfg in plan if cfg.trial_id != a)
    stored = root / "trials.parquet"
    assert not stored.exists() or not list(stored.glob(f"{b}*")), "trial B had already finished"
    shutil.copytree(root / "checkpoints" / a, root / "checkpoints" / b)  # A's checkpoint as B's

    again = sweep(study, "--storage", tmp_path, "--resume")
    err = again.stderr
    assert again.returncode == 0, err[-3000:]
    said = [line for line in err.splitlines() if "ignored, the trial starts over" in line]
    assert said == [f"checkpoint {root / 'checkpoints' / b / STATE_FILE}: it belongs to trial {a}, not to trial {b}; "
                    f"ignored, the trial starts over"], err[-3000:]
    trials = pd.read_parquet(stored).set_index("trial_id")
    assert sorted(trials.index) == sorted(expected)
    for trial_id, metrics in expected.items():  # B ends as B uninterrupted, not with A's numbers
        for key in OUTCOME:
            np.testing.assert_equal(trials.loc[trial_id, key], metrics[key], err_msg=f"{trial_id} {key}")  # exact
    assert trials.loc[a, "top1_err"] != trials.loc[b, "top1_err"]

    saved = yaml.safe_load((root / "study.yaml").read_text())
    saved["spec"]["optimizers"]["adamw"]["lr"] = {"log_uniform": [1.0e-4, 4.0e-4]}  # the saved lr range edited
    (root / "study.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    edited = sweep(study, "--storage", tmp_path, "--resume")
    err = edited.stderr
    assert edited.returncode == 2, err[-3000:]
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err  # one line
    assert "does not match the results stored beside it: 2 of 2 are not in its plan" in err
    assert "lr is" in err and "in optimizers.adamw.lr.log_uniform" in err
    assert len(pd.read_parquet(stored)) == 2  # nothing added
