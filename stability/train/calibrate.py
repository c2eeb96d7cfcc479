"""Calibration: what one epoch of a trial (or of a fused group) costs on this device, from a few steps.

`calibrate(cfgs)` runs the real engine (`run_trial` for one config, `run_fused_trials` for a group)
on the trial's own dataset, seen through a view that stops an epoch after `warmup + steps` training
batches and `val_batches` validation batches and stamps the time at every batch (synchronising the
device first). From the stamps:

    step_s      = mean time of the `steps` training steps after the warm-up ones (loading included)
    val_batch_s = mean time of one validation batch
    epoch_s     = steps per epoch x step_s + validation batches per epoch x val_batch_s
    overhead_s  = the call's wall time (dataset load included) - what the epoch terms account for:
                  building the model, warm-up excess (compilation), the final metrics

A trial of E epochs then costs about overhead_s + E x epoch_s. A data-parallel trial of W workers
is calibrated as one worker with its share of the batch (batch_size / W): its training part of the
epoch is divided by W (the gradient all-reduce is not counted), its validation part is not (every
worker evaluates). Imports no Ray.
"""

from __future__ import annotations

import math
import os
import platform
import time
from typing import Any

import torch

from stability.spec.trial import TrialConfig
from stability.train.loop import trial_data

WARMUP_STEPS = 2
STEPS = 5
VAL_BATCHES = 2


class TimedView:
    """A loaded dataset whose epochs stop after `train_steps` and `val_steps` batches; the time of
    each batch (and of the end of each pass) is stamped in `train_stamps` / `val_stamps`, one list
    per pass (a fused group opens one pass per member; the first member's times are the group's)."""

    def __init__(self, data, train_steps: int, val_steps: int, device: torch.device):
        self.data, self.train_steps, self.val_steps = data, train_steps, val_steps
        self.device = device
        self.train_stamps: list[list[float]] = []
        self.val_stamps: list[list[float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.data, name)

    def _stamp(self, into: list[float]) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        into.append(time.perf_counter())

    def _timed(self, batches, limit: int, stamps: list[float]):
        for i, batch in enumerate(batches):
            if i >= limit:
                break
            self._stamp(stamps)
            yield batch
        self._stamp(stamps)

    def train_batches(self, *args, **kwargs):
        self.train_stamps.append([])
        return self._timed(self.data.train_batches(*args, **kwargs), self.train_steps, self.train_stamps[-1])

    def val_batches(self, batch_size: int):
        self.val_stamps.append([])
        return self._timed(self.data.val_batches(batch_size), self.val_steps, self.val_stamps[-1])


def machine(device: torch.device) -> dict[str, Any]:
    """The device a calibration ran on: kind (cpu or cuda), name, torch threads; `key` names it in the cache."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        key = f"cuda-{name}"
    else:
        name = _cpu_name()
        key = f"cpu-{name}-{torch.get_num_threads()}t"
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    return {"kind": device.type, "name": name, "threads": torch.get_num_threads(), "cores": os.cpu_count(),
            "key": slug}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def calibrate(cfgs: list[TrialConfig], device: str | torch.device = "auto", steps: int = STEPS,
              warmup: int = WARMUP_STEPS, val_batches: int = VAL_BATCHES, workers: int = 1) -> dict[str, Any]:
    """Time a few steps of `cfgs` (one trial, or a group of configs the fused engine trains together;
    `workers`: the data-parallel workers of one trial)."""
    from stability.train.engine import resolve_device, run_trial
    from stability.train.fused import run_fused_trials

    device = resolve_device(device)
    share = {"batch_size": max(1, cfgs[0].train.batch_size // workers)} if workers > 1 else {}
    one_epoch = [cfg.model_copy(update={"epochs": 1, "train": cfg.train.model_copy(update=share)}) for cfg in cfgs]
    first = one_epoch[0]
    recipe = first.train
    start = time.perf_counter()
    data = trial_data(first, device)
    real_steps = data.steps_per_epoch(recipe.batch_size)
    eval_batch = recipe.eval_batch_size if len(cfgs) == 1 else max(recipe.batch_size,  # as evaluate_fused
                                                                     recipe.eval_batch_size // len(cfgs))
    real_val = math.ceil(data.val_size / eval_batch)
    view = TimedView(data, min(real_steps, warmup + steps), min(real_val, val_batches), device)
    if len(one_epoch) > 1:
        run_fused_trials(one_epoch, device, data=view)
    else:
        run_trial(first, device, data=view)
    wall = time.perf_counter() - start
    train, val = view.train_stamps[0], (view.val_stamps[0] if view.val_stamps else [])
    ran = len(train) - 1  # training steps timed (the last stamp closes the pass)
    if ran < 1:
        raise RuntimeError(f"calibration of {first.model}: no training step ran")
    timed = train[min(warmup, ran - 1):]
    step_s = (timed[-1] - timed[0]) / (len(timed) - 1)
    val_batch_s = (val[-1] - val[0]) / (len(val) - 1) if len(val) > 1 else 0.0
    epoch_s = real_steps * step_s / workers + real_val * val_batch_s
    overhead_s = max(0.0, wall - ran * step_s - (len(val) - 1) * val_batch_s)
    return {"model": first.model, "trials": len(cfgs), "workers": workers, "img_size": data.img_size,
            "batch_size": recipe.batch_size,
            "steps_per_epoch": real_steps, "val_batches": real_val, "steps_timed": len(timed) - 1,
            "step_s": step_s, "val_batch_s": val_batch_s, "epoch_s": epoch_s, "overhead_s": overhead_s,
            "wall_s": wall, "machine": machine(device)}
