"""Train K sampled configurations of one model together: one forward/backward per step for all K.

`run_fused_trials(cfgs)` returns one metrics dict per config, with the keys and meaning of
`stability.train.engine.run_trial`; each trial keeps its own seed, initialisation, data order,
augmentation, optimizer (lr, weight decay), schedule, divergence and evaluation, so its results
equal training it alone within float tolerance. The configs may differ only in `lr`,
`weight_decay`, `seed` and `extras`. Members with one data seed (`TrialConfig.batches_seed`, e.g. a
study's `data_order: repeat`) share one generator and one stream of batches: each batch is read and
augmented once for all of them; members with their own data seeds each draw their own batches.
Recipe features that cannot be fused are refused with a ValueError: mixup, cutmix, EMA,
torch.compile, drop path, distillation and patch losses (any
recipe key outside `rules.FUSABLE_RECIPE_KEYS` not at its default). Models: ViT_P, ViT_C and
non-distilled DeiT (`rules.supported_models()`). One process, no data-parallel workers; the optimizers
use torch's fused AdamW/SGD kernels (CPU and CUDA).

Timing: the K trials share the training loop, so each trial's `wall_time_s` is the group's wall
time and `images_per_s` is the trial's own images over the group's training time; the group's
study throughput is K trials per `wall_time_s`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from stability.models import build_model, model_info
from stability.spec.trial import Recipe, TrialConfig
from stability.train.checkpoint import (
    TrialCheckpoint,
    global_random_states,
    set_global_random_states,
)
from stability.train.engine import (
    DIVERGENCE_CHECK_EVERY,
    chance_error,
    patch_cos_sim_by_layer,
    resolve_device,
    seed_everything,
    trial_metrics,
)
from stability.train.fused.model import FusedViT
from stability.train.fused.rules import check_fusable_configs
from stability.train.loop import (
    Clock,
    autocast_for,
    curve_point,
    epoch_steps,
    run_epochs,
    trial_data,
)
from stability.train.optim import (
    build_optimizer,
    build_scheduler,
    fused_kernels_available,
)

FusedEpochCallback = Callable[[int, dict[str, Any]], None]
class _Trial:
    """One trial's own state inside the group: model, optimizer, schedule, data order, results."""

    def __init__(self, cfg: TrialConfig, model: torch.nn.Module, steps_per_epoch: int, fused_optimizer: bool,
                 generator: torch.Generator):
        self.cfg = cfg
        self.model = model
        self.optimizer = build_optimizer(model, cfg, fused=fused_optimizer)
        self.scheduler = build_scheduler(self.optimizer, cfg, steps_per_epoch)
        self.generator = generator  # data order and augmentation; shared by the members with its seed
        self.active = True  # False once its loss went non-finite (diverged)
        self.curve: list[dict[str, Any]] = []
        self.best_err = math.inf
        self.train_loss = math.nan
        self.images = 0
        self.epoch_steps = 0


def run_fused_trials(
    cfgs: list[TrialConfig],
    device: str | torch.device = "auto",
    on_epoch: FusedEpochCallback | None = None,
    log: Callable[[str], None] | None = None,
    checkpoint: TrialCheckpoint | None = None,
    data=None,
) -> list[dict[str, Any]]:
    """Train `cfgs` together; return one metrics dict per config, in order (see the module docstring).

    `on_epoch(k, point)` is called after every evaluated epoch of trial k with the point
    `run_trial` passes to its callback; `log` receives progress lines prefixed with the trial index.
    `checkpoint`: where the group keeps every member's state; the group continues from it when one
    is there (replaying the saved epochs to `on_epoch`).
    `data`: the group's dataset already loaded (calibration passes a timed view of it); default: load it.
    """
    clock = Clock()
    check_fusable_configs(cfgs)
    device = resolve_device(device)
    group = _Group(cfgs, device, data, on_epoch, log)
    if not run_epochs(group, cfgs[0].epochs, clock, device, cfgs, checkpoint, log=log):
        # a saved state of this group that does not fit it: start over, freshly built
        return run_fused_trials(cfgs, device, on_epoch, log, checkpoint, group.data)
    wall = clock.elapsed()
    return [_metrics(t, group.data, group.info, wall, clock.train_seconds, log, k) for k, t in enumerate(group.trials)]


class _Group:
    """The K trials and their fused model: what the epoch loop drives (`stability.train.loop.Epochs`)."""

    def __init__(self, cfgs: list[TrialConfig], device: torch.device, data, on_epoch: FusedEpochCallback | None,
                 log: Callable[[str], None] | None):
        first = cfgs[0]
        self.recipe = first.train
        self.device, self.on_epoch, self.log = device, on_epoch, log
        seed_everything(first.seed)
        data = self.data = trial_data(first, device, data)
        steps_per_epoch = epoch_steps(data, self.recipe)
        models = []
        for cfg in cfgs:  # each trial's own initialisation, as run_trial draws it
            seed_everything(cfg.seed)
            models.append(build_model(cfg.model, data.num_classes, data.img_size,
                                      **{"in_chans": data.in_chans, **cfg.model_args}).to(device))
        self.fused = FusedViT(models)
        self.info = model_info(models[0], data.img_size, data.in_chans)
        generators = {seed: torch.Generator().manual_seed(seed) for seed in {cfg.batches_seed for cfg in cfgs}}
        self.trials = [_Trial(cfg, model, steps_per_epoch, fused_optimizer=fused_kernels_available(device),
                              generator=generators[cfg.batches_seed]) for cfg, model in zip(cfgs, models)]
        self.autocast = autocast_for(device, self.recipe)

    def live(self) -> bool:
        return any(t.active for t in self.trials)

    def train(self, epoch: int) -> None:
        self.fused.train()
        loss_sums = _train_epoch(self.fused, self.trials, self.data, self.recipe, self.autocast, self.device)
        for k, (trial, loss_sum) in enumerate(zip(self.trials, loss_sums.tolist())):
            if trial.active:
                _end_epoch(self.fused, trial, k, loss_sum)

    def evaluate(self, epoch: int, clock: Clock) -> None:
        errors = evaluate_fused(self.fused, self.data, self.recipe, self.autocast)
        for k, (trial, err) in enumerate(zip(self.trials, errors)):
            if trial.active:
                _record_epoch(trial, k, epoch, err, clock, self.on_epoch, self.log)

    def capture(self) -> dict[str, Any]:
        """Every member's weights (views into the fused tensors, so loading them back fills those),
        optimizer, schedule, data order and results so far."""
        members = [{"model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
                    "scheduler": t.scheduler.state_dict(), "data": t.generator.get_state(), "active": t.active,
                    "curve": t.curve, "best_err": t.best_err, "train_loss": t.train_loss, "images": t.images}
                   for t in self.trials]
        return {"random": global_random_states(), "members": members}

    def restore(self, state: dict[str, Any]) -> None:
        for t, member in zip(self.trials, state["members"], strict=True):
            t.model.load_state_dict(member["model"])
            t.optimizer.load_state_dict(member["optimizer"])
            t.scheduler.load_state_dict(member["scheduler"])
            t.generator.set_state(member["data"])
            t.active, t.curve, t.best_err = member["active"], member["curve"], member["best_err"]
            t.train_loss, t.images = member["train_loss"], member["images"]
        set_global_random_states(state["random"])

    def replay(self) -> None:
        for k, trial in enumerate(self.trials):
            for point in trial.curve if self.on_epoch is not None else ():
                self.on_epoch(k, point)


def _train_epoch(fused: FusedViT, trials: list[_Trial], data, recipe: Recipe, autocast, device) -> torch.Tensor:
    """One epoch of every trial in lockstep; returns the per-trial loss sums (K,)."""
    k = len(trials)
    check_every = 1 if device.type == "cpu" else DIVERGENCE_CHECK_EVERY  # a check costs a sync on accelerators
    streams = list({id(t.generator): t.generator for t in trials}.values())  # one per data seed
    stream_of = [next(i for i, g in enumerate(streams) if g is t.generator) for t in trials]
    batches = zip(*(data.train_batches(recipe.batch_size, g, augment=recipe.augment) for g in streams))
    loss_sums = torch.zeros(k, device=device)
    for t in trials:
        t.epoch_steps = 0
    for step, pairs in enumerate(batches, start=1):
        if len(pairs) == 1:  # every member trains on the one batch, read and augmented once
            x, y = pairs[0][0].expand(k, *pairs[0][0].shape), pairs[0][1].expand(k, *pairs[0][1].shape)
        else:
            x = torch.stack([pairs[i][0] for i in stream_of])
            y = torch.stack([pairs[i][1] for i in stream_of])
        with autocast():
            logits = fused(x)
        losses = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), label_smoothing=recipe.label_smoothing,
                                 reduction="none").view(k, -1).mean(1)
        fused.zero_grad(set_to_none=True)
        losses.sum().backward()  # each model's gradient comes from its own loss term only
        fused.grads_to_models()
        for t in trials:
            if not t.active:
                continue
            if recipe.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(t.model.parameters(), recipe.grad_clip)
            t.optimizer.step()
            t.scheduler.step()
            t.epoch_steps += 1
        loss_sums += losses.detach()  # a stopped trial's sum is already non-finite
        if step % check_every == 0:
            _stop_diverged(fused, trials, loss_sums)
            if not any(t.active for t in trials):
                break
    return loss_sums


def _stop_diverged(fused: FusedViT, trials: list[_Trial], loss_sums: torch.Tensor) -> None:
    """Stop the trials whose loss went non-finite (as run_trial stops its epoch). A stopped trial
    stays in the fused batch with zero weights: exploding values slow every kernel down."""
    for k, (trial, loss_sum) in enumerate(zip(trials, loss_sums.tolist())):
        if trial.active and not math.isfinite(loss_sum):
            _end_epoch(fused, trial, k, loss_sum)


def _end_epoch(fused: FusedViT, trial: _Trial, k: int, loss_sum: float) -> None:
    """Count the epoch's images and mean loss; a non-finite loss stops the trial (diverged)."""
    trial.images += trial.epoch_steps * trial.cfg.train.batch_size
    trial.train_loss = loss_sum / max(1, trial.epoch_steps)
    if not math.isfinite(trial.train_loss):
        trial.active = False
        fused.zero_model_(k)


@torch.no_grad()
def evaluate_fused(fused: FusedViT, data, recipe: Recipe, autocast) -> list[float]:
    """Top-1 error (%) of each of the K models on the validation set, all K in one forward per batch.

    Equals `stability.train.engine.evaluate` of each model (eval mode, same images). Each model sees
    max(batch_size, eval_batch_size // K) images per forward: no more than training holds at once."""
    fused.eval()
    per_model = max(recipe.batch_size, recipe.eval_batch_size // fused.k)
    wrong, seen = None, 0
    for x, y in data.val_batches(per_model):
        with autocast():
            logits = fused(x.expand(fused.k, *x.shape))
        batch_wrong = (logits.argmax(dim=-1) != y).sum(dim=1)
        wrong = batch_wrong if wrong is None else wrong + batch_wrong
        seen += y.numel()
    if wrong is None:
        return [0.0] * fused.k
    return [100.0 * w / max(1, seen) for w in wrong.tolist()]


def _record_epoch(trial: _Trial, k: int, epoch: int, err: float, clock: Clock,
                  on_epoch: FusedEpochCallback | None, log: Callable[[str], None] | None) -> None:
    cfg = trial.cfg
    trial.best_err = min(trial.best_err, err)
    point = curve_point(epoch, trial.train_loss, err, trial.optimizer, clock)
    trial.curve.append(point)
    if on_epoch is not None:
        on_epoch(k, point)
    if log is not None:
        log(f"trial {k}: epoch {epoch}/{cfg.epochs}  loss {trial.train_loss:.4f}  top1_err {err:.2f}%  "
            f"lr {point['lr']:.3g}  {point['elapsed_s']:.1f}s")


def _metrics(trial: _Trial, data, info: dict[str, Any], wall: float, train_seconds: float,
             log: Callable[[str], None] | None, k: int) -> dict[str, Any]:
    chance = chance_error(data.num_classes)
    status = "ok" if trial.active else "diverged"
    if status == "ok":
        final_err = trial.curve[-1]["top1_err"]
        layers = patch_cos_sim_by_layer(trial.model, data)
    else:
        final_err, layers = chance, []
        if log is not None:
            log(f"trial {k}: diverged: non-finite loss in epoch {len(trial.curve) + 1}; "
                f"recorded at chance error {chance:.1f}%")
    return trial_metrics(status, final_err, trial.best_err, trial.train_loss, wall,
                         trial.images / train_seconds if train_seconds > 0 else math.nan, info, layers, trial.curve, chance)
