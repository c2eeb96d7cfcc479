"""Teacher checkpoints: what a distillation teacher is stored as, and how it comes back.

A checkpoint is a plain dict saved with torch.save: the model name and build arguments, the data
shape it was trained for, its weights, and its final top-1 error. It rebuilds without the config
that trained it, so a teacher can be given as a path (`train.distillation.teacher: t.pt`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stability.cli import first_line
from stability.results import files
from stability.results.files import atomic_write_bytes
from stability.spec.errors import TrialSetupError
from stability.spec.trial import Recipe, TrialConfig

if TYPE_CHECKING:  # torch is imported where a checkpoint is read or written: naming a teacher needs none
    import torch
    from torch import nn

CHECKPOINT_FORMAT = 1


# Recipe keys a teacher takes from its students (marked TEACHER in spec/trial.py); regularisers
# (mixup, EMA, drop path, the study's factors) stay at their defaults, so the students' sampled knobs
# share one teacher.
TEACHER_INHERITS = Recipe.keys("teacher")


def teacher_config(cfg: TrialConfig) -> TrialConfig:
    """The trial that trains `cfg`'s teacher when it is given by model name: the study's data, the
    basic recipe keys of TEACHER_INHERITS, and the teacher recipe's optimizer, lr, wd and length."""
    teach = cfg.train.distillation.teacher_recipe
    recipe = cfg.train.model_dump(include=set(TEACHER_INHERITS))
    return TrialConfig(
        model=cfg.train.distillation.teacher, optimizer=teach.optimizer, lr=teach.lr,
        weight_decay=teach.weight_decay, epochs=teach.epochs, seed=teach.seed, dataset=cfg.dataset,
        train=Recipe(**recipe),
    )


def teacher_is_checkpoint(teacher: str) -> bool:
    """A teacher ending in .pt/.pth or naming an existing file is a checkpoint, else a model name."""
    return teacher.endswith((".pt", ".pth")) or Path(teacher).is_file()


def checkpoint_dict(model: nn.Module, cfg: TrialConfig, data, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT, "model": cfg.model, "model_args": dict(cfg.model_args),
        "num_classes": data.num_classes, "img_size": data.img_size, "in_chans": data.in_chans,
        "top1_err": metrics.get("top1_err"), "trial_id": cfg.trial_id,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def to_bytes(checkpoint: dict[str, Any]) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def from_bytes(blob: bytes) -> dict[str, Any]:
    import torch

    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Write atomically: a reader (or a resumed sweep) never sees half a checkpoint."""
    atomic_write_bytes(path, to_bytes(checkpoint))


def check_writable(path: str | os.PathLike) -> None:
    """TrialSetupError unless a checkpoint can be written at `path` (checked before training, so a
    trained model is never lost to an unwritable path)."""
    try:
        files.check_writable(path)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename and os.fspath(exc.filename) != os.fspath(path) else ""
        raise TrialSetupError(f"cannot write {path}: {where}{exc.strerror or exc}") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint file; a one-line TrialSetupError when it is missing, not one of ours, or
    names a model or model arguments this version cannot build."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrialSetupError(f"teacher checkpoint {path} does not exist") from None
    except Exception as exc:  # torch raises many types for foreign or damaged files
        raise TrialSetupError(f"cannot read teacher checkpoint {path}: {first_line(exc)}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise TrialSetupError(f"{path} is not a stability checkpoint (save one with stability.train --save-checkpoint)")
    check_checkpoint(checkpoint, path)
    return checkpoint


def check_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """The checkpoint's model, build arguments and data shape are ones this version can rebuild."""
    from stability.models import list_models
    from stability.models.catalog import check_model_args

    model = checkpoint.get("model")
    if model not in list_models():
        raise TrialSetupError(f"teacher checkpoint {path}: unknown model {model!r}")
    for key in ("num_classes", "img_size", "in_chans"):
        value = checkpoint.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TrialSetupError(f"teacher checkpoint {path}: {key} must be a positive integer, got {value!r}")
    model_args = checkpoint.get("model_args")
    if not isinstance(model_args, dict):
        raise TrialSetupError(f"teacher checkpoint {path}: model_args must be a map, got {type(model_args).__name__}")
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise TrialSetupError(f"teacher checkpoint {path}: it holds no weights (state_dict)")
    try:
        check_model_args(model, model_args)
    except TrialSetupError as exc:
        raise TrialSetupError(f"teacher checkpoint {path}: {exc}") from None


def check_teacher_fits(checkpoint: dict[str, Any], **shape: int | None) -> None:
    """The teacher was trained on data of the student's shape (num_classes, img_size, in_chans);
    a shape value of None (not known yet) is not compared."""
    for key, value in shape.items():
        if value is not None and checkpoint[key] != value:
            raise TrialSetupError(f"teacher {checkpoint['model']} was trained with {key}={checkpoint[key]}, "
                                  f"the student's data has {key}={value}")


def build_teacher(checkpoint: dict[str, Any], data, device: torch.device) -> nn.Module:
    """The frozen teacher in eval mode on `device`; its data shape must match the student's."""
    from stability.models import build_model
    from stability.models.catalog import check_model_args

    check_teacher_fits(checkpoint, **{key: getattr(data, key) for key in ("num_classes", "img_size", "in_chans")})
    check_model_args(checkpoint["model"], checkpoint["model_args"])
    model = build_model(checkpoint["model"], checkpoint["num_classes"], checkpoint["img_size"],
                        in_chans=checkpoint["in_chans"], **checkpoint["model_args"])
    model.load_state_dict(checkpoint["state_dict"])
    model.requires_grad_(False)
    return model.to(device).eval()
