"""The papers' ideas as study factors: distillation, patch-diversity losses, LayerScale, CaiT's
class-attention depth; engine level (no Ray) plus spec validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TESTS, run_cli
from stability.train.teacher import load_checkpoint, teacher_config
from stability.spec.trial import TrialConfig
from stability.train.engine import run_trial
from stability.train.losses import Objective, TrainForward, contrastive_loss, distillation_loss, patch_cutmix
from stability.models import block_patch_tokens, build_model
from stability.spec.trial import Distillation, PatchLosses
from stability.sampling import plan_trials
from stability.spec import SpecError, load_spec
from stability.sweep.checks import check_factors
from stability.sweep.teachers import planned_teachers

TINY = str(TESTS / "data" / "tiny.yaml")
BASE = dict(model="vit_p_tiny", optimizer="adamw", lr=2e-3, weight_decay=0.05, epochs=4, seed=0,
            dataset={"name": "digits", "img_size": 8}, train={"batch_size": 64, "warmup_epochs": 1})


def trial(model: str = "vit_p_tiny", epochs: int = 4, model_args: dict | None = None, **train) -> TrialConfig:
    return TrialConfig(**{**BASE, "model": model, "epochs": epochs, "model_args": model_args or {},
                          "train": {**BASE["train"], **train}})


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "vit_c_tiny.pt"
    metrics = run_trial(trial("vit_c_tiny", epochs=3), "cpu", checkpoint_to=str(path))
    return path, metrics


def test_cosine_loss_lowers_last_layer_similarity():
    """The over-smoothing check of the issue: cosine weight 1 vs 0, same seed and data order."""
    plain = run_trial(trial(), "cpu")
    penalised = run_trial(trial(patch_losses={"cosine": 1.0}), "cpu")
    assert plain["status"] == penalised["status"] == "ok"
    assert len(plain["patch_cos_sim_layers"]) == 4  # one value per block of vit_p_tiny
    assert penalised["patch_cos_sim"] < plain["patch_cos_sim"] - 0.1


@pytest.mark.parametrize("losses", [{"contrastive": 1.0}, {"mixing": 1.0}, {"cosine": 0.5, "contrastive": 0.5, "mixing": 0.5}])
def test_patch_losses_train(losses):
    metrics = run_trial(trial("vit_c_tiny", epochs=2, patch_losses=losses), "cpu")
    assert metrics["status"] == "ok" and 0 <= metrics["top1_err"] < 90


def _cosine_term(model, x, out):
    """Mean over images of the mean pairwise cosine similarity of distinct last-block patch tokens."""
    unit = F.normalize(out["last"].float(), dim=-1)
    sims = unit @ unit.transpose(1, 2)
    n = sims.shape[1]
    return ((sims.sum(dim=(1, 2)) - sims.diagonal(dim1=1, dim2=2).sum(1)) / (n * (n - 1))).mean()


def _contrastive_term(model, x, out):
    """Gong et al.: -log softmax over {h_i.e_i, h_i.mean_{j!=i} e_j} for every patch i (unit vectors,
    embeddings detached), averaged over patches and images; written patch by patch."""
    h = F.normalize(out["last"].float(), dim=-1)
    e = F.normalize(out["embed"].detach().float(), dim=-1)
    terms = []
    for b in range(h.shape[0]):
        for i in range(h.shape[1]):
            others = torch.cat([e[b, :i], e[b, i + 1:]]).mean(0)
            scores = torch.stack([h[b, i] @ e[b, i], h[b, i] @ others])
            terms.append(-torch.log_softmax(scores, 0)[0])
    return torch.stack(terms).mean()


def _mixing_term(model, x, out, labels):
    """The head applied to every last-layer patch token, cross-entropy against its source image's label."""
    tokens = model.forward_features(x)[:, model.num_prefix_tokens:]
    return F.cross_entropy(model.head(tokens).flatten(0, 1), labels.flatten())


@pytest.mark.parametrize("name", ["cosine", "contrastive", "mixing"])
def test_a_patch_loss_weight_adds_its_term_to_the_loss_and_its_gradient(name):
    """Objective with patch_losses.<name>=w on a fixed batch: loss = (loss at w=0) + w * term and
    grad = (grad at w=0) + w * grad(term), the term computed here from its definition; so a
    weight > 0 changes every step's gradient, and a weight the objective ignored would fail."""
    torch.manual_seed(0)
    model = build_model("vit_p_tiny", 10, 16, in_chans=1)
    with torch.no_grad():  # the head starts at zero (pycls init): give the patch logits something to say
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    forward = TrainForward(model, need_tokens=True)
    weight = 0.7

    def objective(w: float) -> Objective:
        return Objective(num_classes=10, label_smoothing=0.1, distillation=Distillation(),
                         patch_losses=PatchLosses(**{name: w}), teacher=None, patch_size=4, seed=0)

    weighted = objective(weight)
    x, target, labels = weighted.mix(torch.randn(8, 1, 16, 16), torch.arange(8) % 10)
    if name == "mixing":  # the mixing loss brings its patch-aligned CutMix and per-patch labels
        assert labels is not None and labels.shape == (8, 16) and target.shape == (8, 10)
    else:
        assert labels is None

    def loss_and_grads(compute):
        model.zero_grad(set_to_none=True)
        out = forward(x)
        loss = compute(out)
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
        return float(loss.detach()), [torch.zeros_like(p) if g is None else g for p, g in zip(model.parameters(), grads)], out

    base, base_grads, out = loss_and_grads(lambda out: objective(0.0)(out, x, target, labels))
    loss, grads, _ = loss_and_grads(lambda out: weighted(out, x, target, labels))
    expected = {"cosine": _cosine_term, "contrastive": _contrastive_term,
                "mixing": lambda m, x, out: _mixing_term(m, x, out, labels)}[name]
    term, term_grads, _ = loss_and_grads(lambda out: expected(model, x, out))

    torch.testing.assert_close(out["last"].detach(), block_patch_tokens(model, x)[-1])  # the last block's patches
    assert abs(term) > 1e-2
    assert loss == pytest.approx(base + weight * term, rel=1e-5, abs=1e-6)
    changed = 0
    for (pname, _), g, g0, gt in zip(model.named_parameters(), grads, base_grads, term_grads):
        torch.testing.assert_close(g, g0 + weight * gt, rtol=1e-4, atol=1e-6, msg=pname)
        changed += bool((g - g0).abs().max() > 1e-6)
    assert changed >= len(list(model.parameters())) // 2, "the term must reach most parameters' gradients"


def test_patch_cutmix_is_patch_aligned_and_targets_match_areas():
    rng = np.random.default_rng(0)
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 16, 16).clone()
    y = torch.tensor([0, 1, 2, 3])
    for _ in range(20):
        mixed, target, labels = patch_cutmix(x, y, patch=4, num_classes=5, smoothing=0.0, rng=rng)
        # every 4x4 patch is a single source image, and the patch labels name that image
        patches = mixed.view(4, 4, 4, 4, 4).permute(0, 1, 3, 2, 4).reshape(4, 16, 16)
        assert torch.all(patches.amin(-1) == patches.amax(-1))
        assert torch.equal(patches[:, :, 0].long(), labels)
        kept = (labels == y[:, None]).float().mean(1)
        assert torch.allclose(target[torch.arange(4), y], kept)
        assert torch.allclose(target.sum(1), torch.ones(4))


def test_loss_functions_on_known_inputs():
    logits = torch.randn(8, 10)
    assert distillation_loss(logits, logits, "soft", 3.0).abs() < 1e-6
    assert torch.allclose(distillation_loss(logits, -logits, "hard", 1.0), F.cross_entropy(logits, (-logits).argmax(1)))
    e = torch.randn(2, 16, 32)
    assert contrastive_loss(e, e) < contrastive_loss(e.flip(1), e)


@pytest.mark.parametrize("name", ["vit_c_tiny", "deit_tiny_distilled_p4", "cait_xxs12_p4"])
def test_train_forward_exposes_patch_tokens(name):
    model = build_model(name, 10, 16, in_chans=1)
    out = TrainForward(model, need_tokens=True)(torch.randn(2, 1, 16, 16))
    assert out["last"].shape[:2] == out["embed"].shape[:2] == (2, 16)
    assert out["patch_logits"].shape == (2, 16, 10)


def test_objective_refuses_mixing_without_patch_grid():
    cfg = trial(patch_losses={"mixing": 1.0})
    with pytest.raises(ValueError, match="patch grid"):
        Objective(num_classes=10, label_smoothing=0.1, distillation=cfg.train.distillation,
                  patch_losses=cfg.train.patch_losses, teacher=None, patch_size=None, seed=0)


def test_teacher_checkpoint_round_trip_and_distillation(teacher_path):
    path, metrics = teacher_path
    checkpoint = load_checkpoint(path)
    assert checkpoint["model"] == "vit_c_tiny" and checkpoint["top1_err"] == pytest.approx(metrics["top1_err"])
    for kind in ("soft", "hard"):
        student = trial("deit_tiny_distilled_p4", epochs=1, model_args={"depth": 2},
                        distillation={"type": kind, "teacher": str(path)})
        out = run_trial(student, "cpu")
        assert out["status"] == "ok"


def test_teacher_for_other_data_is_refused(teacher_path):
    path, _ = teacher_path
    cfg = TrialConfig(**{**BASE, "dataset": {"name": "digits", "img_size": 16},
                         "train": {**BASE["train"], "distillation": {"type": "soft", "teacher": str(path)}}})
    with pytest.raises(ValueError, match="img_size=8"):
        run_trial(cfg, "cpu")


def test_train_cli_distils_from_a_saved_teacher(teacher_path, tmp_path):
    path, _ = teacher_path
    common = ["--model", "vit_p_tiny", "--optimizer", "adamw", "--lr", "2e-3", "--weight-decay", "0.05",
              "--epochs", "1", "--img-size", "8", "--quiet"]
    out = run_cli("stability.train", *common, "--set", "train.distillation.type=hard",
                  "--set", f"train.distillation.teacher={path}")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "ok"
    by_name = run_cli("stability.train", *common, "--set", "train.distillation.type=hard",
                      "--set", "train.distillation.teacher=vit_c_tiny")
    assert by_name.returncode == 2 and "--save-checkpoint" in by_name.stderr and "Traceback" not in by_name.stderr
    saved = tmp_path / "t.pt"
    assert run_cli("stability.train", *common, "--save-checkpoint", str(saved)).returncode == 0
    assert load_checkpoint(saved)["model"] == "vit_p_tiny"


def test_layerscale_and_class_attention_depth_reach_the_model():
    vit = build_model("vit_p_tiny", 10, 8, in_chans=1, init_values=1e-2)
    assert torch.allclose(vit.blocks[0].ls1.gamma, torch.full_like(vit.blocks[0].ls1.gamma, 1e-2))
    cait = build_model("cait_xxs12_p4", 10, 16, in_chans=1, init_values=1e-5, depth_token_only=1)
    assert len(cait.blocks_token_only) == 1 and float(cait.blocks[0].gamma_1.detach().max()) == pytest.approx(1e-5)


def test_nested_knobs_are_sampled_and_become_dotted_columns():
    spec = load_spec(TINY, ["train.patch_losses.cosine={choice: [0.0, 1.0]}", "model_args.init_values={choice: [1.0e-5, 0.1]}"])
    plan = plan_trials(spec)
    assert {cfg.train.patch_losses.cosine for cfg in plan} == {0.0, 1.0}
    assert {cfg.extras["patch_losses.cosine"] for cfg in plan} == {0.0, 1.0}
    assert {cfg.model_args["init_values"] for cfg in plan} == {1e-5, 0.1}


@pytest.mark.parametrize("sets, message", [
    (["train.patch_losses.cosin=1"], "did you mean 'cosine'"),
    (["train.patch_losses.mixing=1", "train.mixup=0.8"], "brings its own patch-aligned CutMix"),
    (["train.distillation.type=soft"], "needs a teacher"),
])
def test_bad_factor_specs_are_one_line_errors(sets, message):
    with pytest.raises(SpecError, match=message):
        plan_trials(load_spec(TINY, sets))


def test_plan_checks_teachers_and_patch_models():
    with pytest.raises(SpecError, match="no patch tokens"):
        check_factors(plan_trials(load_spec(TINY, ["models=[regnety_1gf]", "train.patch_losses.cosine=1"])))
    with pytest.raises(SpecError, match="neither a model name nor a checkpoint"):
        check_factors(plan_trials(load_spec(TINY, ["train.distillation.type=hard", "train.distillation.teacher=vit_q"])))


def test_one_teacher_per_teacher_recipe():
    plan = plan_trials(load_spec(TINY, ["train.distillation.type={choice: [soft, hard]}",
                                        "train.distillation.teacher=vit_c_tiny"]))
    teachers = planned_teachers(plan)
    assert len(teachers) == 1
    (tcfg,) = teachers.values()
    assert tcfg.model == "vit_c_tiny" and tcfg == teacher_config(plan[0])
    assert not tcfg.train.distillation.active


@pytest.mark.ray
def test_sweep_trains_the_teacher_once_and_resume_reuses_it(sweep, tmp_path):
    import pandas as pd

    sets = ["--set", "name=distil", "--set", "models=[{name: deit_tiny_distilled_p4, model_args: {depth: 2}}]", "--set", "optimizers={adamw: {lr: 0.002, weight_decay: 0.05}}",
            "--set", "samples=2", "--set", "epochs=1", "--set", "train.distillation.type={choice: [soft, hard]}",
            "--set", "train.distillation.teacher=vit_c_tiny", "--set", "train.distillation.teacher_recipe.epochs=2"]
    args = [TINY, "--storage", tmp_path, *sets]
    out = sweep(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "training 1 distillation teacher(s) first" in out.stderr
    (teacher,) = (tmp_path / "distil" / "teachers").glob("vit_c_tiny-*.pt")
    assert json.loads(teacher.with_suffix(".json").read_text())["metrics"]["status"] == "ok"
    trials = pd.read_parquet(tmp_path / "distil" / "trials.parquet")
    assert sorted(trials["distillation.type"]) == ["hard", "soft"] and set(trials["status"]) == {"ok"}

    first = next((tmp_path / "distil" / "trials.parquet").glob("*.parquet"))
    first.unlink()  # lose one trial: the resume runs it again with the stored teacher
    stamp = teacher.stat().st_mtime_ns
    again = sweep(*args, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "teacher(s) first" not in again.stderr and teacher.stat().st_mtime_ns == stamp
    assert len(pd.read_parquet(tmp_path / "distil" / "trials.parquet")) == 2
