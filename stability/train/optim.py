"""Optimizer and learning-rate schedule of the recipe (Xiao et al. 2021, section 5.4).

Weight decay is not applied to: every 1-D parameter (biases, LayerNorm/BatchNorm gains and
shifts, LayerScale gammas) and the parameters a timm model lists in `no_weight_decay()`
(position embeddings, class and distillation tokens). timm's `param_groups_weight_decay`
does the split.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from timm.optim import param_groups_weight_decay

from stability.spec.trial import TrialConfig


def fused_kernels_available(device: torch.device) -> bool:
    """torch's fused (single-kernel) AdamW/SGD step: CUDA, and the CPU from torch 2.4 on."""
    if device.type == "cuda":
        return True
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return device.type == "cpu" and (major, minor) >= (2, 4)


def build_optimizer(model: torch.nn.Module, cfg: TrialConfig, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum 0.9, Nesterov by default) with no decay on biases and gains."""
    no_decay = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    groups = param_groups_weight_decay(model, cfg.weight_decay, no_weight_decay_list=no_decay)
    args = cfg.optimizer_kwargs()
    fused_arg = {"fused": True} if fused else {}
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(args["betas"]), eps=args["eps"], **fused_arg)
    nesterov = args["nesterov"] and args["momentum"] > 0  # torch refuses Nesterov without momentum
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=args["momentum"], nesterov=nesterov, **fused_arg)


def warmup_cosine(total_steps: int, warmup_steps: int, warmup_start: float, floor: float) -> Callable[[int], float]:
    """Factor of the peak lr at a step: a half-period cosine from 1 down to `floor` over the
    whole run, multiplied during warm-up by a linear ramp from `warmup_start` to 1 (pycls)."""

    def factor(step: int) -> float:
        progress = min(step, total_steps) / max(1, total_steps)
        cosine = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if step < warmup_steps:
            alpha = step / warmup_steps
            cosine *= warmup_start * (1.0 - alpha) + alpha
        return cosine

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrialConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule of the recipe, as a torch LambdaLR stepped after every batch."""
    total = cfg.epochs * steps_per_epoch
    warmup = min(total, round(cfg.train.warmup_epochs * steps_per_epoch))
    factor = warmup_cosine(total, warmup, cfg.train.warmup_start, cfg.train.lr_floor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
