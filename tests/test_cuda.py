"""The trial engine on CUDA. Every test is marked `cuda` and skipped where no CUDA device is.

The GPU check (`bash benchmarks/gpu_check.sh OUT_DIR`) runs this file alone on a GPU machine.
`STABILITY_TEST_DEVICE=cpu` makes the CPU the device under test, to rehearse the file without a
GPU; a comparison with the CPU then compares the CPU with itself.

Training is chaotic, so comparisons are made early: after one epoch of digits (11 optimizer steps
of 128 images at 8 px). Tolerances, all in fp32 with TF32 off (cuDNN convolutions use TF32 by
default), where two runs on one CPU with 1 and 2 threads differ by about 1e-6 in the weights:
- weights: relative L2 difference of all weights together <= WEIGHTS_RTOL;
- epoch train loss: relative difference <= LOSS_RTOL;
- top-1 error: within TOP1_ATOL points (one validation image is 0.28 points);
- patch cosine similarity (over-smoothing metric): within COS_ATOL; same weights: COS_SAME_ATOL.
bf16 comparisons (fused group vs members alone under autocast) allow BF16_LOSS_RTOL on the loss.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from stability.data import load_dataset
from stability.models import build_model
from stability.spec.trial import TrialConfig
from stability.train.engine import patch_cos_sim_by_layer, run_trial
from stability.train.fused import run_fused_trials

DEVICE_ENV = "STABILITY_TEST_DEVICE"  # cpu: rehearse these tests on the CPU; default: cuda
WEIGHTS_RTOL, LOSS_RTOL, TOP1_ATOL, COS_ATOL, COS_SAME_ATOL = 1e-3, 1e-3, 1.0, 1e-3, 1e-4
BF16_LOSS_RTOL = 0.05


def device_under_test() -> torch.device | None:
    """The device these tests run on, or None when it is CUDA and no CUDA device is here."""
    name = os.environ.get(DEVICE_ENV, "cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        return None
    return torch.device(name)


DEVICE = device_under_test()
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(
    DEVICE is None, reason=f"no CUDA device ({DEVICE_ENV}=cpu rehearses these tests on the CPU)")]


@pytest.fixture
def no_tf32():
    """Plain fp32 matmuls and convolutions while the test runs (restored afterwards)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def digits_trial(model: str, *, epochs: int = 1, batch_size: int = 128, precision: str = "fp32",
                 lr: float = 1e-3, weight_decay: float = 0.05, seed: int = 0, **train) -> TrialConfig:
    return TrialConfig(model=model, optimizer="adamw", lr=lr, weight_decay=weight_decay, epochs=epochs, seed=seed,
                       dataset={"name": "digits", "img_size": 8},
                       train={"batch_size": batch_size, "precision": precision, "warmup_epochs": 0, **train})


def trained_weights(cfg: TrialConfig, device, path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Run the trial; its metrics and its final weights (on the CPU)."""
    metrics = run_trial(cfg, device=device, checkpoint_to=str(path))
    return metrics, torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """||a - b|| / ||a|| over all floating-point tensors together."""
    assert a.keys() == b.keys()
    keys = [k for k in a if a[k].is_floating_point()]
    num = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in keys)
    den = sum(float(a[k].double().pow(2).sum()) for k in keys)
    return math.sqrt(num / den)


def assert_metrics_agree(mine: dict, reference: dict, loss_rtol: float = LOSS_RTOL) -> None:
    assert mine["status"] == reference["status"] == "ok"
    assert mine["train_loss"] == pytest.approx(reference["train_loss"], rel=loss_rtol)
    assert abs(mine["top1_err"] - reference["top1_err"]) <= TOP1_ATOL, (mine["top1_err"], reference["top1_err"])
    assert abs(mine["patch_cos_sim"] - reference["patch_cos_sim"]) <= COS_ATOL


def test_bf16_trial_learns_digits():
    cfg = digits_trial("vit_c_tiny", epochs=6, batch_size=64, precision="bf16", lr=2e-3, warmup_epochs=1)
    metrics = run_trial(cfg, device=DEVICE)
    losses = [point["train_loss"] for point in metrics["curve"]]
    assert metrics["status"] == "ok" and metrics["epochs_run"] == 6, metrics
    assert losses[-1] < 0.75 * losses[0], losses
    assert metrics["top1_err"] < 50, metrics["top1_err"]  # chance: 90
    assert math.isfinite(metrics["patch_cos_sim"]) and metrics["images_per_s"] > 0


@pytest.mark.parametrize("model", ["vit_p_tiny", "vit_c_tiny"])
def test_fp32_on_the_device_agrees_with_the_cpu(model, no_tf32, tmp_path):
    cfg = digits_trial(model)
    on_device, device_weights = trained_weights(cfg, DEVICE, tmp_path / "device.pt")
    on_cpu, cpu_weights = trained_weights(cfg, "cpu", tmp_path / "cpu.pt")
    assert relative_difference(cpu_weights, device_weights) <= WEIGHTS_RTOL
    assert_metrics_agree(on_device, on_cpu)


@pytest.mark.parametrize("model", ["vit_p_tiny", "vit_c_tiny"])
def test_fused_group_equals_its_members_trained_alone(model, no_tf32):
    cfgs = [digits_trial(model, lr=lr, weight_decay=wd, seed=seed)
            for lr, wd, seed in [(5e-4, 0.05, 0), (1e-3, 0.3, 1), (2e-3, 0.1, 2)]]
    fused = run_fused_trials(cfgs, device=DEVICE)
    for k, cfg in enumerate(cfgs):
        assert_metrics_agree(fused[k], run_trial(cfg, device=DEVICE))


def test_fused_group_trains_under_bf16_autocast():
    cfgs = [digits_trial("vit_c_tiny", epochs=2, batch_size=64, precision="bf16", lr=lr, seed=seed)
            for lr, seed in [(1e-3, 0), (2e-3, 1)]]
    fused = run_fused_trials(cfgs, device=DEVICE)
    for k, cfg in enumerate(cfgs):
        alone = run_trial(cfg, device=DEVICE)
        assert fused[k]["status"] == alone["status"] == "ok"
        assert fused[k]["curve"][0]["train_loss"] == pytest.approx(alone["curve"][0]["train_loss"], rel=BF16_LOSS_RTOL)
        assert fused[k]["train_loss"] < fused[k]["curve"][0]["train_loss"] * 1.05


def test_distilled_and_patch_loss_trials_run(tmp_path):
    teacher = tmp_path / "teacher.pt"
    run_trial(digits_trial("vit_p_tiny", precision="bf16"), device=DEVICE, checkpoint_to=str(teacher))
    for kind in ("soft", "hard"):
        student = digits_trial("deit_tiny_distilled_p4", precision="bf16",
                               distillation={"type": kind, "teacher": str(teacher), "alpha": 0.5})
        metrics = run_trial(student, device=DEVICE)
        assert metrics["status"] == "ok" and math.isfinite(metrics["train_loss"]), (kind, metrics)
    patch = digits_trial("vit_p_tiny", precision="bf16",
                         patch_losses={"cosine": 0.5, "contrastive": 0.5, "mixing": 0.5})
    metrics = run_trial(patch, device=DEVICE)
    assert metrics["status"] == "ok"
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["patch_cos_sim"])


@pytest.mark.parametrize("model", ["vit_p_tiny", "vit_c_tiny", "deit_tiny_p4"])
def test_over_smoothing_metric_matches_the_cpu_on_the_same_weights(model, no_tf32):
    torch.manual_seed(0)
    cpu_model = build_model(model, 10, 8, in_chans=1)
    with torch.no_grad():  # away from the initialisation (zero head, small tokens)
        for p in cpu_model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    device_model = build_model(model, 10, 8, in_chans=1).to(DEVICE)
    device_model.load_state_dict(cpu_model.state_dict())
    on_cpu = patch_cos_sim_by_layer(cpu_model, load_dataset("digits", img_size=8, device="cpu"))
    on_device = patch_cos_sim_by_layer(device_model, load_dataset("digits", img_size=8, device=DEVICE))
    assert len(on_cpu) == len(on_device) > 0
    assert on_device == pytest.approx(on_cpu, abs=COS_SAME_ATOL)


def test_channels_last_and_compile_give_the_same_first_steps(no_tf32, tmp_path):
    """Last in the file: the cold torch.compile is its slowest step."""
    base = digits_trial("vit_c_tiny", channels_last=False, compile=False)
    plain, plain_weights = trained_weights(base, DEVICE, tmp_path / "plain.pt")
    variants = {"channels_last": {"channels_last": True},
                "channels_last+compile": {"channels_last": True, "compile": True}}
    try:
        for name, change in variants.items():
            cfg = base.model_copy(update={"train": base.train.model_copy(update=change)})
            metrics, weights = trained_weights(cfg, DEVICE, tmp_path / f"{name}.pt")
            assert relative_difference(plain_weights, weights) <= WEIGHTS_RTOL, name
            assert_metrics_agree(metrics, plain)
    finally:
        torch.compiler.reset()
