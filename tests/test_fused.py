"""Fused trials: the fused model equals K separate timm models; a fused digits study equals
training its trials one by one; divergence stays within its trial; clear errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from stability.spec.trial import TrialConfig
from stability.train.engine import evaluate, run_trial
from stability.train.fused import FusedViT, check_fusable_configs, run_fused_trials
from stability.models import build_model

K = 3


def _models(name: str, img_size: int = 8, **overrides) -> list[torch.nn.Module]:
    """K models with their own seeds, perturbed so no parameter keeps its (often zero) init."""
    models = []
    for seed in range(K):
        torch.manual_seed(seed)
        model = build_model(name, 10, img_size, in_chans=1, **overrides).double()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        models.append(model)
    return models


@pytest.mark.parametrize("name, conv_stem, pack_attention, img_size, overrides", [
    ("vit_p_tiny", "auto", True, 8, {}), ("vit_p_tiny", "auto", False, 8, {}), ("vit_c_tiny", "grouped", False, 8, {}),
    ("vit_c_tiny", "matmul", True, 8, {}), ("vit_c_tiny", "matmul", True, 16, {}),
    # LayerScale in every block, and one block only (the class-token-only last block is then the whole stack)
    ("vit_p_tiny", "auto", True, 8, {"init_values": 0.5}), ("vit_p_tiny", "auto", True, 8, {"depth": 1})])
def test_fused_forward_and_gradients_equal_separate_models(name, conv_stem, pack_attention, img_size, overrides):
    models = _models(name, img_size, **overrides)
    reference = copy.deepcopy(models)
    fused = FusedViT(models, conv_stem=conv_stem, pack_attention=pack_attention).train()
    x = torch.randn(K, 16, 1, img_size, img_size, dtype=torch.float64)
    weights = torch.randn(K, 16, 10, dtype=torch.float64)

    out = fused(x)
    (out * weights).sum().backward()
    fused.grads_to_models()
    for k, (model, ref) in enumerate(zip(models, reference)):
        expected = ref.train()(x[k])
        (expected * weights[k]).sum().backward()
        torch.testing.assert_close(out[k], expected, rtol=1e-10, atol=1e-10)
        for (pname, p), q in zip(model.named_parameters(), ref.parameters()):
            assert p.grad is not None, pname
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-10, msg=f"model {k} grad of {pname}")
        for b, c in zip(model.buffers(), ref.buffers()):  # BatchNorm running statistics of the conv stem
            torch.testing.assert_close(b, c, rtol=1e-10, atol=1e-10)

    fused.eval()
    with torch.no_grad():
        out = fused(x)
        for k, ref in enumerate(reference):
            torch.testing.assert_close(out[k], ref.eval()(x[k]), rtol=1e-10, atol=1e-10)


def test_models_share_storage_with_the_fused_parameters():
    models = _models("vit_p_tiny")
    fused = FusedViT(models).eval()
    x = torch.randn(K, 4, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        models[1].head.bias.add_(1.0)  # an optimizer step on model 1 alone
        out = fused(x)
        torch.testing.assert_close(out[1], models[1](x[1]))
        torch.testing.assert_close(out[0], models[0](x[0]))


def _study(model: str, optimizer: str, points, epochs: int) -> list[TrialConfig]:
    return [TrialConfig(model=model, optimizer=optimizer, lr=lr, weight_decay=wd, seed=seed, epochs=epochs,
                        dataset={"name": "digits", "img_size": 8}, train={"batch_size": 64, "warmup_epochs": 1})
            for lr, wd, seed in points]


def test_fused_study_matches_trials_run_one_by_one():
    # Moderate learning rates: at the top of the default range a 5-epoch 8-px trial is chaotic, and
    # run_trial itself then moves by more than a point between torch thread counts.
    cfgs = _study("vit_c_tiny", "adamw", [(5e-4, 0.05, 0), (4e-4, 0.3, 1), (6e-4, 0.1, 2)], epochs=5)
    seen: list[tuple[int, int]] = []
    fused = run_fused_trials(cfgs, device="cpu", on_epoch=lambda k, point: seen.append((k, point["epoch"])))
    alone = [run_trial(cfg, device="cpu") for cfg in cfgs]
    assert sorted(seen) == [(k, e) for k in range(K) for e in range(1, 6)]
    for k, (f, a) in enumerate(zip(fused, alone)):
        assert set(f) == set(a)
        assert f["status"] == a["status"] == "ok" and f["epochs_run"] == a["epochs_run"] == 5
        assert f["top1_err"] < 80, "the study must learn something for the comparison to mean anything"
        assert abs(f["top1_err"] - a["top1_err"]) <= 1.0, (k, f["top1_err"], a["top1_err"])
        assert (f["params"], f["gflops"]) == (a["params"], a["gflops"])
        assert len(f["patch_cos_sim_layers"]) == len(a["patch_cos_sim_layers"]) == 3
        for pf, pa in zip(f["curve"], a["curve"]):
            assert pf["epoch"] == pa["epoch"] and math.isclose(pf["lr"], pa["lr"], rel_tol=1e-12)
            assert abs(pf["train_loss"] - pa["train_loss"]) < 0.05, (k, pf, pa)
        assert f["curve"][0]["top1_err"] == pytest.approx(a["curve"][0]["top1_err"], abs=0.5)
        assert f["images_per_s"] > 0 and f["wall_time_s"] > 0


def test_fused_evaluation_uses_each_trials_own_weights():
    """Each trial's top-1 error (every epoch) and patch similarity are those of its own weights: the
    same as when the trial is fused alone. The two trials score differently (by 20 images), so
    evaluating one trial's weights for both, or mixing them up, changes a reported top-1 error."""
    cfgs = _study("vit_p_tiny", "adamw", [(3e-4, 0.05, 0), (3e-3, 0.1, 1)], epochs=1)
    together = run_fused_trials(cfgs, device="cpu")
    alone = [run_fused_trials([cfg], device="cpu")[0] for cfg in cfgs]
    from stability.data import load_dataset

    one_image = 100 / load_dataset("digits", img_size=8).val_size
    assert abs(alone[0]["top1_err"] - alone[1]["top1_err"]) > 10 * one_image
    for k, (mine, reference) in enumerate(zip(together, alone)):
        assert mine["top1_err"] == pytest.approx(reference["top1_err"], abs=one_image / 2), k
        assert [p["top1_err"] for p in mine["curve"]] == pytest.approx([p["top1_err"] for p in reference["curve"]],
                                                                       abs=one_image / 2), k
        assert mine["patch_cos_sim"] == pytest.approx(reference["patch_cos_sim"], abs=1e-5), k
        # training follows the trial too (not what this test is about, but it makes the comparison fair)
        assert mine["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-6), k


def test_a_diverging_trial_is_diverged_and_leaves_the_others_untouched():
    cfgs = _study("vit_p_tiny", "sgd", [(0.05, 1e-5, 0), (1e4, 1e-5, 1), (0.1, 1e-5, 2)], epochs=2)
    with_diverging = run_fused_trials(cfgs, device="cpu")
    without = run_fused_trials([cfgs[0], cfgs[2]], device="cpu")
    diverged = with_diverging[1]
    assert diverged["status"] == "diverged"
    assert diverged["top1_err"] == diverged["best_top1_err"] == 90.0  # chance on 10 classes
    assert not math.isfinite(diverged["train_loss"]) and math.isnan(diverged["patch_cos_sim"])
    assert diverged["epochs_run"] == 0 and diverged["curve"] == []
    for ok, reference in zip([with_diverging[0], with_diverging[2]], without):
        assert ok["status"] == "ok" and ok["epochs_run"] == 2
        assert ok["top1_err"] == reference["top1_err"]
        assert [p["train_loss"] for p in ok["curve"]] == pytest.approx([p["train_loss"] for p in reference["curve"]],
                                                                      rel=1e-6)


def test_engine_evaluate_agrees_with_the_fused_forward_after_training_steps():
    models = _models("vit_c_tiny")
    fused = FusedViT(models)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in models]
    x, y = torch.randn(K, 32, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (K, 32))
    for _ in range(3):
        fused.train().zero_grad()
        torch.nn.functional.cross_entropy(fused(x).flatten(0, 1), y.flatten()).backward()
        fused.grads_to_models()
        for opt in optimizers:
            opt.step()

    class Batches:
        def __init__(self, k):
            self.k = k

        def val_batches(self, batch_size):
            yield x[self.k], y[self.k]

    fused.eval()
    with torch.no_grad():
        wrong = (fused(x).argmax(-1) != y).double().mean(1) * 100
    for k, model in enumerate(models):
        assert evaluate(model, Batches(k), 64, torch.no_grad) == pytest.approx(float(wrong[k]))


BASE = dict(model="vit_p_tiny", optimizer="adamw", lr=1e-3, weight_decay=0.05, epochs=2)


@pytest.mark.parametrize("other, message", [
    (dict(model="vit_c_tiny"), "differs from trial 0 in model"),
    (dict(epochs=3), "in epochs"),
    (dict(optimizer="sgd"), "in optimizer"),
    (dict(train={"batch_size": 32}), "in train.batch_size"),
    (dict(dataset={"img_size": 16}), "in dataset.img_size"),
])
def test_mismatched_configs_are_refused(other, message):
    with pytest.raises(ValueError, match=message):
        check_fusable_configs([TrialConfig(**BASE), TrialConfig(**{**BASE, **other})])


@pytest.mark.parametrize("change, message", [
    (dict(model="regnety_1gf"), "cannot be fused; supported: .*vit_c_tiny"),
    (dict(model="deit_tiny_distilled_p4"), "cannot be fused"),
    (dict(model="cait_xxs12_p4"), "cannot be fused"),
    (dict(train={"ema": True}), "do not support train.ema"),
    (dict(train={"mixup": 0.8, "cutmix": 1.0}), "train.cutmix, train.mixup"),
    (dict(train={"drop_path": 0.1}), "train.drop_path"),
    (dict(train={"compile": True}), "train.compile"),
])
def test_unsupported_models_and_recipes_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        run_fused_trials([TrialConfig(**{**BASE, **change})], device="cpu")


def test_configs_differing_only_in_lr_wd_seed_are_accepted_and_empty_is_refused():
    check_fusable_configs([TrialConfig(**BASE), TrialConfig(**{**BASE, "lr": 2e-3, "weight_decay": 0.3, "seed": 7})])
    with pytest.raises(ValueError, match="at least one"):
        check_fusable_configs([])


def test_fused_model_refuses_what_it_does_not_implement():
    with pytest.raises(ValueError, match="dropout"):
        FusedViT([build_model("vit_p_tiny", 10, 8, in_chans=1, drop_rate=0.1)])
    with pytest.raises(ValueError, match="differs in architecture"):
        FusedViT([build_model("vit_p_tiny", 10, 8, in_chans=1), build_model("vit_p_tiny", 10, 16, in_chans=1)])
    for change, message in [(dict(momentum=None), "momentum=None"), (dict(padding_mode="reflect"), "non-zero padding")]:
        stem = build_model("vit_c_tiny", 10, 8, in_chans=1)
        layer = next(m for m in stem.patch_embed.proj if isinstance(m, torch.nn.BatchNorm2d if "momentum" in change
                                                                         else torch.nn.Conv2d))
        for key, value in change.items():
            setattr(layer, key, value)
        with pytest.raises(ValueError, match=message):
            FusedViT([stem])
    fused = FusedViT([build_model("vit_p_tiny", 10, 8, in_chans=1) for _ in range(2)])
    with pytest.raises(ValueError, match=r"expected images of shape \(2, batch"):
        fused(torch.randn(3, 4, 1, 8, 8))
    with pytest.raises(RuntimeError, match="cannot be moved"):
        fused.double()


def test_batched_linear_under_bf16_autocast_matches_autograd_through_baddbmm():
    """The engine trains under bf16 autocast on GPUs; the hand-written backward must follow autocast's dtypes."""
    from stability.train.fused.model import BatchedLinear

    torch.manual_seed(0)
    leaves = [torch.randn(3, 5, 4), torch.randn(3, 6, 4), torch.randn(3, 6)]
    ours, reference = ([t.clone().requires_grad_() for t in leaves] for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = BatchedLinear.apply(*ours)
        expected = torch.baddbmm(reference[2].unsqueeze(1), reference[0], reference[1].transpose(1, 2))
    assert out.dtype == expected.dtype == torch.bfloat16
    out.float().square().sum().backward()
    expected.float().square().sum().backward()
    for a, b in zip(ours, reference):
        assert a.grad.dtype == torch.float32
        torch.testing.assert_close(a.grad, b.grad, rtol=2e-2, atol=2e-2)


def test_fused_evaluation_equals_each_models_own_evaluation_on_digits():
    import contextlib

    from stability.spec.trial import Recipe
    from stability.data import load_dataset
    from stability.train.fused.engine import evaluate_fused

    data = load_dataset("digits", img_size=8)
    models = []
    for seed in range(K):
        torch.manual_seed(seed)
        models.append(build_model("vit_c_tiny", 10, 8, in_chans=1))
    fused = FusedViT(models)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=3e-3) for m in models]
    batches = [data.train_batches(64, torch.Generator().manual_seed(k)) for k in range(K)]
    for _ in range(5):  # a few steps, so the models (and their BatchNorm statistics) differ
        xs, ys = zip(*(next(b) for b in batches))
        fused.train().zero_grad()
        torch.nn.functional.cross_entropy(fused(torch.stack(xs)).flatten(0, 1), torch.stack(ys).flatten()).backward()
        fused.grads_to_models()
        for opt in optimizers:
            opt.step()
    errors = evaluate_fused(fused, data, Recipe(batch_size=64), contextlib.nullcontext)
    one_image = 100 / data.val_size
    for err, model in zip(errors, models):
        assert err == pytest.approx(evaluate(model, data, 512, contextlib.nullcontext), abs=one_image + 1e-9)
    assert len(set(errors)) > 1


def test_packed_attention_groups_whole_images_only_for_few_tokens():
    from stability.train.fused.model import images_per_sequence

    assert images_per_sequence(64, 5) == 8  # 40 tokens per sequence
    assert images_per_sequence(60, 5) == 12 and images_per_sequence(359, 5) == 1  # the largest divisor within 64 tokens
    assert images_per_sequence(7, 5) == 7 and images_per_sequence(13, 5) == 1
    assert images_per_sequence(512, 17) == 1  # from 9 tokens on, torch's kernel per image is faster
