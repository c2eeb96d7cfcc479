"""The trial engine: train and evaluate one configuration. Imports no Ray.

`run_trial(cfg)` is a plain function: the sweep calls it inside a Ray Tune trial (or a Ray
Train worker, where torch.distributed is already initialised), `python -m stability.train`
calls it from the shell. Per-epoch metrics go to the `on_epoch` callback; the return value
is the trial's metrics. A non-finite loss is a result (status "diverged"), not an exception.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable

import numpy as np
import torch
from timm.data import Mixup
from timm.utils import ModelEmaV3

from stability.models import (
    block_patch_tokens,
    build_model,
    model_info,
    patch_cosine_similarity,
)
from stability.spec.errors import TrialSetupError
from stability.spec.trial import TrialConfig
from stability.train.checkpoint import TrialCheckpoint, capture, restore
from stability.train.loop import (
    Clock,
    autocast_for,
    curve_point,
    epoch_steps,
    run_epochs,
    trial_data,
)
from stability.train.losses import Objective, TrainForward
from stability.train.optim import (
    build_optimizer,
    build_scheduler,
    fused_kernels_available,
)
from stability.train.teacher import (
    build_teacher,
    checkpoint_dict,
    load_checkpoint,
    save_checkpoint,
    teacher_is_checkpoint,
)

DIVERGENCE_CHECK_EVERY = 16  # steps between host syncs that look for a non-finite loss
COS_SIM_IMAGES = 256  # validation images used for the over-smoothing metric

EpochCallback = Callable[[dict[str, Any]], None]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" means CUDA when present, else the CPU; otherwise cpu, cuda or cuda:N of this machine
    (TrialSetupError naming the device when it is none of them or is not there)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise TrialSetupError(f"device {str(device)!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise TrialSetupError(f"device {str(device)!r}: trials run on cpu or cuda; use cpu, cuda, cuda:N or auto")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrialSetupError("device cuda requested but no CUDA device is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TrialSetupError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA "
                                  f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (timm's Mixup draws from it) and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def chance_error(num_classes: int) -> float:
    """Top-1 error (%) of guessing: what a diverged trial records."""
    return 100.0 - 100.0 / num_classes


@torch.no_grad()
def evaluate(model: torch.nn.Module, data, batch_size: int, autocast) -> float:
    """Top-1 error (%) on the validation set."""
    model.eval()
    wrong, seen = 0, 0
    for x, y in data.val_batches(batch_size):
        with autocast():
            logits = model(x)
        wrong += (logits.argmax(dim=1) != y).sum()
        seen += y.numel()
    return 100.0 * float(wrong) / max(1, seen)


@torch.no_grad()
def patch_cos_sim_by_layer(model: torch.nn.Module, data) -> list[float]:
    """Mean pairwise cosine similarity of patch tokens after each block (validation images)."""
    x, _ = next(iter(data.val_batches(COS_SIM_IMAGES)))
    return [float(patch_cosine_similarity(tokens)) for tokens in block_patch_tokens(model, x)]


def load_teacher(cfg: TrialConfig, checkpoint: dict[str, Any] | None, data, device: torch.device):
    """The frozen distillation teacher of `cfg`, or None when the trial does not distil."""
    distill = cfg.train.distillation
    if not distill.active:
        return None
    if checkpoint is None:
        if not teacher_is_checkpoint(distill.teacher):
            raise TrialSetupError(
                f"teacher {distill.teacher!r} is a model name: a sweep trains it first; to run one trial alone, "
                f"train it with `python -m stability.train --model {distill.teacher} ... --save-checkpoint t.pt` "
                f"and pass --set train.distillation.teacher=t.pt")
        checkpoint = load_checkpoint(distill.teacher)
    return build_teacher(checkpoint, data, device)


def _patch_size(model: torch.nn.Module, img_size: int) -> int | None:
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    return img_size // grid[0] if grid else None


def run_trial(
    cfg: TrialConfig,
    device: str | torch.device = "auto",
    on_epoch: EpochCallback | None = None,
    log: Callable[[str], None] | None = None,
    teacher: dict[str, Any] | None = None,
    checkpoint_to: str | None = None,
    checkpoint: TrialCheckpoint | None = None,
    data=None,
) -> dict[str, Any]:
    """Train one trial and return its metrics (the schema: stability/results/schema.py).

    `teacher`: a loaded checkpoint of the distillation teacher (default: read the path the config
    names). `checkpoint_to`: save the trained (EMA) model there, e.g. to serve as a teacher.
    `checkpoint`: where the trial keeps its mid-trial state; when one is there the trial continues
    from it (its earlier epochs are passed to `on_epoch` again, so a new listener has the whole curve).
    `data`: the trial's dataset already loaded (calibration passes a timed view of it); default: load it.
    """
    clock = Clock()
    device = resolve_device(device)
    trial = _Trial(cfg, device, data, teacher, on_epoch, log)
    if not run_epochs(trial, cfg.epochs, clock, device, [cfg], checkpoint, rank=trial.rank, log=log):
        # a saved state of this trial that does not fit it: start over, freshly built
        return run_trial(cfg, device, on_epoch, log, teacher, checkpoint_to, checkpoint, trial.data)
    return trial.metrics(clock, checkpoint_to)


class _Trial:
    """One trial's model, optimizer, schedule, data order and results: what the epoch loop drives
    (`stability.train.loop.Epochs`); `train` is the hot loop."""

    def __init__(self, cfg: TrialConfig, device: torch.device, data, teacher: dict[str, Any] | None,
                 on_epoch: EpochCallback | None, log: Callable[[str], None] | None):
        self.cfg, self.device, self.on_epoch, self.log = cfg, device, on_epoch, log
        self.rank, self.world = _distributed()
        seed_everything(cfg.seed)
        recipe = self.recipe = cfg.train
        data = self.data = trial_data(cfg, device, data)

        overrides = {"in_chans": data.in_chans, **({"drop_path_rate": recipe.drop_path} if recipe.drop_path else {})}
        model = build_model(cfg.model, data.num_classes, data.img_size, **{**overrides, **cfg.model_args}).to(device)
        self.info = model_info(model, data.img_size, data.in_chans)
        teacher_model = load_teacher(cfg, teacher, data, device)
        if teacher_model is not None and hasattr(model, "set_distilled_training"):
            model.set_distilled_training(True)  # DeiT: (class, distillation) logits in training
        self.channels_last = device.type == "cuda" and recipe.channels_last and any(
            isinstance(m, torch.nn.Conv2d) for m in model.modules())
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        train_model: torch.nn.Module = TrainForward(model, need_tokens=recipe.patch_losses.active)
        if self.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            train_model = torch.nn.parallel.DistributedDataParallel(train_model, device_ids=ids)
        if recipe.compile:
            train_model = torch.compile(train_model)
        self.train_model = train_model

        steps_per_epoch = epoch_steps(data, recipe, self.world)
        self.batch_size = recipe.batch_size // self.world
        self.optimizer = build_optimizer(model, cfg, fused=fused_kernels_available(device))
        self.scheduler = build_scheduler(self.optimizer, cfg, steps_per_epoch)
        self.ema = ModelEmaV3(model, decay=recipe.ema_decay, use_warmup=True) if recipe.ema else None
        self.eval_model = self.ema.module if self.ema is not None else model

        self.mixup = None
        if recipe.mixup > 0 or recipe.cutmix > 0:
            self.mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix,
                               label_smoothing=recipe.label_smoothing, num_classes=data.num_classes)
        self.objective = Objective(num_classes=data.num_classes, label_smoothing=recipe.label_smoothing,
                                   distillation=recipe.distillation, patch_losses=recipe.patch_losses,
                                   teacher=teacher_model, patch_size=_patch_size(model, data.img_size), seed=cfg.seed)
        self.autocast = autocast_for(device, recipe)
        self.generator = torch.Generator().manual_seed(cfg.batches_seed)  # data order and augmentation

        self.curve: list[dict[str, Any]] = []
        self.status, self.best_err, self.train_loss = "ok", math.inf, math.nan
        self.images, self.step, self.epoch = 0, 0, 0

    def live(self) -> bool:
        return self.status == "ok"

    def train(self, epoch: int) -> None:
        self.epoch = epoch
        model, optimizer, recipe = self.model, self.optimizer, self.recipe
        model.train()
        loss_sum = torch.zeros((), device=self.device)
        epoch_steps = 0
        for x, y in self.data.train_batches(self.batch_size, self.generator, augment=recipe.augment, rank=self.rank,
                                            world_size=self.world):
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x, target, patch_labels = self.objective.mix(x, y)
            if self.mixup is not None:
                x, target = self.mixup(x, y)
            with self.autocast():
                loss = self.objective(self.train_model(x), x, target, patch_labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            self.scheduler.step()
            self.step += 1
            if self.ema is not None:
                self.ema.update(model, step=self.step)
            loss_sum += loss.detach().float()
            epoch_steps += 1
            if epoch_steps % DIVERGENCE_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
                break
        self.images += epoch_steps * self.batch_size * self.world
        self.train_loss = float(loss_sum) / max(1, epoch_steps)
        if not math.isfinite(self.train_loss):
            self.status = "diverged"

    def evaluate(self, epoch: int, clock: Clock) -> None:
        err = evaluate(self.eval_model, self.data, self.recipe.eval_batch_size, self.autocast)
        self.best_err = min(self.best_err, err)
        point = curve_point(epoch, self.train_loss, err, self.optimizer, clock)
        self.curve.append(point)
        if self.on_epoch is not None:
            self.on_epoch(point)
        if self.log is not None:
            self.log(f"epoch {epoch}/{self.cfg.epochs}  loss {self.train_loss:.4f}  top1_err {err:.2f}%  "
                     f"lr {point['lr']:.3g}  {point['elapsed_s']:.1f}s")

    def capture(self) -> dict[str, Any]:
        return capture(self.step, self.model, self.optimizer, self.scheduler, self.ema, self.generator,
                       self.objective.rng, {"curve": self.curve, "best_err": self.best_err,
                                            "train_loss": self.train_loss, "images": self.images})

    def restore(self, state: dict[str, Any]) -> None:
        resumed = restore(state, self.model, self.optimizer, self.scheduler, self.ema, self.generator,
                          self.objective.rng)
        self.step, self.curve, self.best_err = resumed["step"], resumed["curve"], resumed["best_err"]
        self.train_loss, self.images = resumed["train_loss"], resumed["images"]

    def replay(self) -> None:
        for point in self.curve if self.on_epoch is not None else ():
            self.on_epoch(point)

    def metrics(self, clock: Clock, checkpoint_to: str | None) -> dict[str, Any]:
        chance = chance_error(self.data.num_classes)
        if self.status == "diverged":
            final_err, layers = chance, []
            if self.log is not None:
                self.log(f"diverged: non-finite loss in epoch {self.epoch}; recorded at chance error {chance:.1f}%")
        else:
            final_err = self.curve[-1]["top1_err"]
            layers = patch_cos_sim_by_layer(self.eval_model, self.data)
            if checkpoint_to is not None and self.rank == 0:
                save_checkpoint(checkpoint_dict(self.eval_model, self.cfg, self.data, {"top1_err": final_err}),
                                checkpoint_to)
        return trial_metrics(self.status, final_err, self.best_err, self.train_loss, clock.elapsed(),
                             self.images / clock.train_seconds if clock.train_seconds > 0 else math.nan, self.info,
                             layers, self.curve, chance)


def trial_metrics(status: str, final_err: float, best_err: float, train_loss: float, wall_time_s: float,
                  images_per_s: float, info: dict[str, Any], layers: list[float], curve: list[dict[str, Any]],
                  chance: float) -> dict[str, Any]:
    """What a trial returns (one trial alone or a member of a fused group): its row's metrics and its curve."""
    return {
        "status": status,
        "top1_err": final_err,
        "best_top1_err": best_err if math.isfinite(best_err) else chance,
        "train_loss": train_loss,
        "wall_time_s": wall_time_s,
        "images_per_s": images_per_s,
        "params": info["params"],
        "gflops": info["gflops"],
        "patch_cos_sim": layers[-1] if layers else math.nan,
        "patch_cos_sim_layers": layers,
        "epochs_run": len(curve),
        "error": "",
        "curve": curve,
    }
