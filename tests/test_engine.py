"""The trial engine on real (tiny) digits training: learning, divergence, determinism, the CLI."""

from __future__ import annotations

import contextlib
import copy
import json
import math

import pytest
import torch

from conftest import run_cli
from stability.data import load_dataset
from stability.spec.trial import TrialConfig
from stability.train import engine
from stability.train.teacher import load_checkpoint
from stability.train.engine import chance_error, evaluate, run_trial
from stability.train.losses import Objective
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


def _hook_optimizer(monkeypatch, before_step=None, after_step=None):
    """Make the engine's optimizer call before_step(model) / after_step(model) around every step:
    the gradients the step applies and the weights it leaves, seen from outside the engine."""
    def build(model, cfg, **kwargs):
        optimizer = build_optimizer(model, cfg, **kwargs)
        if before_step is not None:
            optimizer.register_step_pre_hook(lambda _opt, _args, _kwargs: before_step(model))
        if after_step is not None:
            optimizer.register_step_post_hook(lambda _opt, _args, _kwargs: after_step(model))
        return optimizer

    monkeypatch.setattr(engine, "build_optimizer", build)


def _train_losses(result) -> list[float]:
    return [p["train_loss"] for p in result["curve"]]


def test_ema_evaluates_the_warmed_up_moving_average_of_the_trained_weights(monkeypatch, tmp_path):
    """With train.ema the reported top-1 error (every epoch) and the saved model are those of
    ema <- d*ema + (1-d)*weights after every optimizer step, d = min(ema_decay, 1 - step^(-2/3))
    (timm's warm-up: the first step copies), not of the raw weights; training itself is unchanged."""
    decay = 0.9
    data = load_dataset("digits", img_size=8)
    tracked: dict = {"step": 0}

    def after_step(model):
        tracked["step"] += 1
        if "ema" not in tracked:
            tracked["raw"], tracked["ema"] = model, copy.deepcopy(model)
        ema = tracked["ema"]
        d = min(decay, 1.0 - tracked["step"] ** (-2.0 / 3.0))
        raw = model.state_dict()
        with torch.no_grad():
            for name, value in ema.state_dict().items():
                if value.is_floating_point():
                    value.mul_(d).add_(raw[name], alpha=1.0 - d)
                else:  # BatchNorm's num_batches_tracked
                    value.copy_(raw[name])

    cfg = tiny(epochs=3, train={"ema": True, "ema_decay": decay})
    ema_err, raw_err = [], []

    def on_epoch(point):  # after the engine's own evaluation of the epoch
        for model, errors in ((tracked["ema"], ema_err), (tracked["raw"], raw_err)):
            errors.append(evaluate(model, data, cfg.train.eval_batch_size, contextlib.nullcontext))

    _hook_optimizer(monkeypatch, after_step=after_step)
    saved = tmp_path / "ema.pt"
    with_ema = run_trial(cfg, device="cpu", on_epoch=on_epoch, checkpoint_to=str(saved))
    monkeypatch.undo()
    without = run_trial(tiny(epochs=3), device="cpu")

    assert with_ema["status"] == "ok" and tracked["step"] == 3 * data.steps_per_epoch(64)
    one_image = 100.0 / data.val_size
    reported = [p["top1_err"] for p in with_ema["curve"]]
    assert reported == pytest.approx(ema_err, abs=one_image / 2)
    assert reported != pytest.approx(raw_err, abs=one_image / 2), "the raw weights must score differently here"
    assert with_ema["top1_err"] == reported[-1]
    state = load_checkpoint(saved)["state_dict"]
    ema_state, raw_state = tracked["ema"].state_dict(), tracked["raw"].state_dict()
    for name, value in state.items():
        torch.testing.assert_close(value, ema_state[name], rtol=1e-5, atol=1e-6, msg=name)
    assert max(float((v - raw_state[n]).abs().max()) for n, v in state.items() if v.is_floating_point()) > 1e-2
    # the average is evaluated only: the trained weights and their losses are those of a run without EMA
    assert _train_losses(with_ema) == _train_losses(without)


def _record_objective(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(images, targets) the engine's objective receives at every step, after mixup/CutMix."""
    seen = []

    class Recording(Objective):
        def __call__(self, out, x, target, patch_labels):
            seen.append((x.detach().clone(), target.detach().clone()))
            return super().__call__(out, x, target, patch_labels)

    monkeypatch.setattr(engine, "Objective", Recording)
    return seen


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_mixup_and_cutmix_mix_every_batch_and_its_labels(mix, monkeypatch):
    """Same seed, so the same batches: with train.mixup (cutmix) each batch the model trains on is
    lam*x + (1-lam)*x.flip(0) (x with a box pasted from x.flip(0)) and its targets are the same
    lam-mix of the smoothed one-hot labels; the training losses change accordingly."""
    smoothing = 0.1
    plain_seen = _record_objective(monkeypatch)
    plain = run_trial(tiny(epochs=1, train={"label_smoothing": smoothing}), device="cpu")
    mixed_seen = _record_objective(monkeypatch)
    mixed = run_trial(tiny(epochs=1, train={"label_smoothing": smoothing, mix: 1.0}), device="cpu")

    assert len(plain_seen) == len(mixed_seen) == 22
    off, on = smoothing / 10, 1.0 - smoothing + smoothing / 10
    lams = []
    for (x, y), (xm, target) in zip(plain_seen, mixed_seen):
        assert y.dim() == 1 and target.shape == (64, 10)
        k = int(torch.nonzero(y != y.flip(0))[0])  # an image mixed with one of another class
        lam = (float(target[k, y[k]]) - off) / (on - off)
        smooth = torch.nn.functional.one_hot(y, 10) * (on - off) + off
        torch.testing.assert_close(target, lam * smooth + (1 - lam) * smooth.flip(0))
        if mix == "mixup":
            torch.testing.assert_close(xm, lam * x + (1 - lam) * x.flip(0))
        else:
            pasted = (xm != x).any(dim=(0, 1))  # pixels that differ from the image's own
            assert torch.equal(torch.where(pasted, x.flip(0), x), xm)
            rows, cols = pasted.any(dim=1).nonzero(), pasted.any(dim=0).nonzero()
            box = (int(rows.max() - rows.min() + 1) * int(cols.max() - cols.min() + 1)) if pasted.any() else 0
            assert box <= round((1 - lam) * 64)  # inside the box whose area lam leaves out
        lams.append(lam)
    assert all(0.0 <= lam <= 1.0 for lam in lams) and sum(lam < 0.9 for lam in lams) >= 5
    assert _train_losses(mixed) != pytest.approx(_train_losses(plain), rel=1e-3)


def test_grad_clip_bounds_the_gradient_norm_the_optimizer_applies(monkeypatch):
    """train.grad_clip=c: every step applies the raw gradient scaled by c/||g|| when ||g|| > c (the
    global norm over all parameters), so the result differs from the unclipped run."""
    clip = 0.05

    def recorder(norms, first):
        def before_step(model):
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if not first:
                first.extend(g.clone() for g in grads)
            norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return before_step

    free_norms, free_first, clipped_norms, clipped_first = [], [], [], []
    sgd = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-5, "epochs": 2}
    _hook_optimizer(monkeypatch, before_step=recorder(free_norms, free_first))
    free = run_trial(tiny(**sgd), device="cpu")
    _hook_optimizer(monkeypatch, before_step=recorder(clipped_norms, clipped_first))
    clipped = run_trial(tiny(**sgd, train={"grad_clip": clip}), device="cpu")

    assert len(free_norms) == len(clipped_norms) == 44
    assert min(free_norms) > 2 * clip, "the unclipped gradients must exceed the clip for the test to mean anything"
    assert max(clipped_norms) <= clip * (1 + 1e-5)
    # every raw gradient of this run exceeds the bound too: each is scaled down to it, none zeroed
    assert min(clipped_norms) >= clip * 0.99
    # the first step sees the same batch and weights in both runs: clipping is the same direction, rescaled
    scale = clip / (free_norms[0] + 1e-6)
    for raw, applied in zip(free_first, clipped_first):
        torch.testing.assert_close(applied, raw * scale, rtol=1e-4, atol=1e-9)
    assert _train_losses(clipped) != pytest.approx(_train_losses(free), rel=1e-3)


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
