"""The trial engine on real (tiny) digits training: learning, divergence, determinism, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import run_cli
from stability.spec.trial import TrialConfig
from stability.train.engine import chance_error, run_trial
from stability.train.optim import build_optimizer, warmup_cosine


def tiny(**changes) -> TrialConfig:
    base = {"model": "vit_c_tiny", "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05, "epochs": 4, "seed": 0,
            "dataset": {"name": "digits", "img_size": 8}, "train": {"batch_size": 64, "warmup_epochs": 0.5}}
    for key, value in changes.items():
        if key in ("train", "dataset"):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return TrialConfig.model_validate(base)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_short_trial_learns_and_near_zero_lr_does_not():
    epochs_seen = []
    good = run_trial(tiny(), device="cpu", on_epoch=epochs_seen.append)
    stuck = run_trial(tiny(lr=1e-8), device="cpu")
    assert good["status"] == "ok" and stuck["status"] == "ok"
    assert good["top1_err"] < 60.0, good  # chance is 90%
    assert stuck["top1_err"] > 75.0, stuck
    assert good["top1_err"] < stuck["top1_err"] - 30.0
    assert [p["epoch"] for p in epochs_seen] == [1, 2, 3, 4]
    assert good["best_top1_err"] <= good["top1_err"]
    assert good["params"] > 0 and good["gflops"] > 0 and good["images_per_s"] > 0
    assert 0.0 < good["patch_cos_sim"] <= 1.0
    assert len(good["patch_cos_sim_layers"]) >= 2


def test_sgd_trial_with_mixup_ema_and_clipping_runs():
    result = run_trial(tiny(optimizer="sgd", lr=0.1, weight_decay=5e-5, epochs=2,
                            train={"mixup": 0.8, "cutmix": 1.0, "ema": True, "ema_decay": 0.99, "grad_clip": 1.0}),
                       device="cpu")
    assert result["status"] == "ok" and math.isfinite(result["train_loss"])


def test_divergence_is_a_result_at_chance_error():
    result = run_trial(tiny(optimizer="sgd", lr=1e6, weight_decay=0.0, train={"label_smoothing": 0.0}), device="cpu")
    assert result["status"] == "diverged"
    assert result["top1_err"] == pytest.approx(chance_error(10)) == pytest.approx(90.0)
    assert not math.isfinite(result["train_loss"])
    assert result["epochs_run"] < 4


def test_same_seed_same_result_other_seed_differs():
    first = run_trial(tiny(epochs=2), device="cpu")
    second = run_trial(tiny(epochs=2), device="cpu")
    other = run_trial(tiny(epochs=2, seed=1), device="cpu")
    keys = ("top1_err", "train_loss", "patch_cos_sim")
    assert [first[k] for k in keys] == [second[k] for k in keys]
    assert first["curve"] == [{**p, "elapsed_s": q["elapsed_s"]} for p, q in zip(second["curve"], first["curve"])]
    assert other["train_loss"] != first["train_loss"]


def test_schedule_warms_up_then_follows_half_cosine_to_floor():
    factor = warmup_cosine(total_steps=100, warmup_steps=10, warmup_start=0.1, floor=0.005)
    assert factor(0) == pytest.approx(0.1)
    assert all(factor(s) < factor(s + 1) for s in range(9))
    assert factor(50) == pytest.approx(0.005 + 0.995 * 0.5)
    assert factor(100) == pytest.approx(0.005)
    assert all(factor(s) >= factor(s + 1) for s in range(10, 100))


def test_no_weight_decay_on_biases_norms_and_tokens():
    from stability.models import build_model

    model = build_model("vit_p_tiny", num_classes=10, img_size=16, in_chans=1)
    optimizer = build_optimizer(model, tiny(model="vit_p_tiny"))
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, param in model.named_parameters():
        excluded = param.ndim <= 1 or name in ("pos_embed", "cls_token")
        assert (id(param) not in decayed) == excluded, name


def test_train_cli_prints_json_last_line():
    out = run_cli("stability.train", "--model", "vit_p_tiny", "--optimizer", "sgd", "--lr", "0.05",
                  "--weight-decay", "1e-4", "--epochs", "1", "--img-size", "8", "--batch-size", "64", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["status"] == "ok" and 0 <= metrics["top1_err"] <= 100
    assert {"best_top1_err", "train_loss", "images_per_s", "params", "gflops", "patch_cos_sim"} <= set(metrics)
    assert "epoch 1/1" in out.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--model", "vit_x"], "unknown model 'vit_x'"),
    (["--dataset", "cifar10", "--root", "/nonexistent/data"], "/nonexistent/data"),
    (["--lr", "-1"], "lr"),
    (["--set", "train.mixupp=1"], "mixupp"),
])
def test_train_cli_bad_input_exits_2_with_one_line(args, fragment, capsys):
    from stability.train.__main__ import main

    base = {"--model": "vit_p_tiny", "--optimizer": "sgd", "--lr": "0.1", "--weight-decay": "0", "--epochs": "1"}
    argv = []
    for key, value in base.items():
        if key not in args:
            argv += [key, value]
    with pytest.raises(SystemExit) as info:
        main([*argv, *args])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
