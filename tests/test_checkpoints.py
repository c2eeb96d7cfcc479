"""Mid-trial checkpoints: a trial interrupted and resumed ends exactly as the uninterrupted trial
(CPU, same thread count), with every epoch of its curve once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stability.spec import TrialConfig
from stability.train.engine import run_trial
from stability.train.checkpoint import CheckpointPolicy, TrialCheckpoint

EPOCHS = 4


class Interrupted(Exception):
    pass


def config(**train) -> TrialConfig:
    return TrialConfig(model="vit_c_tiny", optimizer="adamw", lr=2e-3, weight_decay=0.05, epochs=EPOCHS, seed=5,
                       dataset={"name": "digits", "img_size": 8},
                       train={"batch_size": 128, "warmup_epochs": 1, **train})


def interrupt_after(epoch: int, seen: list):
    def on_epoch(point):
        seen.append(point["epoch"])
        if point["epoch"] == epoch:
            raise Interrupted
    return on_epoch


def same_outcome(a: dict, b: dict) -> None:
    for key in ("status", "top1_err", "best_top1_err", "train_loss", "patch_cos_sim", "patch_cos_sim_layers", "epochs_run"):
        np.testing.assert_equal(a[key], b[key], err_msg=key)  # exact; NaN equals NaN
    strip = lambda curve: [{k: v for k, v in p.items() if k != "elapsed_s"} for p in curve]  # noqa: E731
    assert strip(a["curve"]) == strip(b["curve"])


@pytest.mark.parametrize("train", [{}, {"ema": True, "ema_decay": 0.9, "mixup": 0.8, "drop_path": 0.1,
                                        "patch_losses": {"cosine": 0.5}}], ids=["plain", "ema-mixup-droppath-patchloss"])
def test_a_resumed_trial_ends_exactly_as_the_uninterrupted_one(train, tmp_path):
    torch.set_num_threads(1)
    cfg = config(**train)
    reference = run_trial(cfg, device="cpu")
    checkpoint = TrialCheckpoint(tmp_path / cfg.trial_id, CheckpointPolicy(every_epochs=1))
    seen: list[int] = []
    with pytest.raises(Interrupted):
        run_trial(cfg, device="cpu", checkpoint=checkpoint, on_epoch=interrupt_after(3, seen))
    assert seen == [1, 2, 3] and checkpoint.load()["epoch"] == 2  # epoch 3 ended before its checkpoint
    replayed: list[int] = []
    resumed = run_trial(cfg, device="cpu", checkpoint=TrialCheckpoint(tmp_path / cfg.trial_id, CheckpointPolicy(1)),
                        on_epoch=lambda p: replayed.append(p["epoch"]))
    same_outcome(resumed, reference)
    assert replayed == [1, 2, 3, 4]  # the saved epochs are passed on again, then the rest: each once


def test_checkpoint_policy_every_n_epochs_off_and_time_based(tmp_path):
    assert [e for e in range(1, 7) if CheckpointPolicy(every_epochs=2).due(e, 0.0)] == [2, 4, 6]
    assert not any(CheckpointPolicy(every_epochs=0).due(e, 1e9) for e in range(1, 7))
    timed = CheckpointPolicy(interval_s=300)
    assert not timed.due(1, 299.0) and timed.due(1, 300.0)


def test_a_damaged_checkpoint_is_not_trusted(tmp_path):
    checkpoint = TrialCheckpoint(tmp_path / "t", CheckpointPolicy(every_epochs=1))
    checkpoint.folder.mkdir()
    checkpoint.path.write_bytes(b"not a checkpoint")
    assert checkpoint.load() is None
    checkpoint.delete()
    assert not checkpoint.folder.exists()


def test_a_resumed_fused_group_ends_exactly_as_the_uninterrupted_one(tmp_path):
    from stability.train.fused.engine import run_fused_trials

    torch.set_num_threads(1)
    cfgs = [config().model_copy(update={"model": "vit_p_tiny", "lr": lr, "seed": seed})
            for lr, seed in ((2e-3, 1), (5e-3, 2), (8.0, 3))]  # the last diverges: a stopped member is state too
    reference = run_fused_trials(cfgs, device="cpu")
    assert [m["status"] for m in reference] == ["ok", "ok", "diverged"]
    folder = tmp_path / cfgs[0].trial_id
    seen: list[tuple[int, int]] = []

    def crash_at_3(k, point):
        seen.append((k, point["epoch"]))
        if point["epoch"] == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_fused_trials(cfgs, device="cpu", on_epoch=crash_at_3, checkpoint=TrialCheckpoint(folder, CheckpointPolicy(1)))
    replayed: list[tuple[int, int]] = []
    resumed = run_fused_trials(cfgs, device="cpu", on_epoch=lambda k, p: replayed.append((k, p["epoch"])),
                               checkpoint=TrialCheckpoint(folder, CheckpointPolicy(1)))
    for a, b in zip(resumed, reference):
        same_outcome(a, b)
    assert sorted(replayed) == sorted((k, e) for k, m in enumerate(reference) for e in range(1, m["epochs_run"] + 1))
