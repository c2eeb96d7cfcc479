"""`python -m stability.train`: one trial, no Ray; progress on stderr, JSON metrics on stdout."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from stability.cli import UsageError, fail
from stability.spec import (
    OPTIMIZERS,
    SpecError,
    TrialConfig,
    TrialSetupError,
    apply_overrides,
    validation_message,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m stability.train",
        description="Train one configuration (no Ray) and print its metrics as one JSON line on stdout.",
        epilog="example: python -m stability.train --model vit_c_tiny --optimizer adamw --lr 2e-3 "
        "--weight-decay 0.05 --epochs 10",
    )
    p.add_argument("--model", required=True, help="model name (see stability.models.list_models())")
    p.add_argument("--optimizer", required=True, choices=OPTIMIZERS)
    p.add_argument("--lr", required=True, type=float, help="peak learning rate")
    p.add_argument("--weight-decay", required=True, type=float)
    p.add_argument("--epochs", required=True, type=int)
    p.add_argument("--dataset", default="digits", help="digits (default), cifar10, cifar100, imagefolder, shards, synthetic")
    p.add_argument("--root", default=None, help="dataset folder (cifar, imagefolder) or shards folder or URI")
    p.add_argument("--img-size", type=int, default=None, help="input resolution (default: the dataset's)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default 128)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, e.g. train.mixup=0.8, model_args.init_values=1e-5 (repeatable)")
    p.add_argument("--save-checkpoint", metavar="PATH", default=None,
                   help="save the trained model (e.g. a distillation teacher: train.distillation.teacher=PATH)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress on stderr")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> TrialConfig:
    raw = {
        "model": args.model, "optimizer": args.optimizer, "lr": args.lr,
        "weight_decay": args.weight_decay, "epochs": args.epochs, "seed": args.seed,
        "dataset": {"name": args.dataset, "root": args.root, "img_size": args.img_size},
        "train": {} if args.batch_size is None else {"batch_size": args.batch_size},
    }
    apply_overrides(raw, args.assignments)
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(validation_message(exc, model=TrialConfig)) from None


def validate(cfg: TrialConfig) -> None:
    """Check names against the registries, and the trial's input against what its model and data
    take, before any work starts."""
    from stability.data import DatasetError, check_dataset
    from stability.models import list_models

    if cfg.model not in list_models():
        raise UsageError(f"unknown model {cfg.model!r}; choose from: {', '.join(list_models())}")
    try:
        check_dataset(cfg.dataset.name, cfg.dataset.root)
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    check_input(cfg)
    check_factors(cfg)


def check_input(cfg: TrialConfig) -> None:
    """What the sweep checks per trial before it runs (torch-free tables): the image size against the
    dataset and the model's patches and stem, model_args against the model's builder, the batch size
    against the training set."""
    from stability.data.checks import (
        check_batch_size,
        check_dataset_options,
        resolve_img_size,
    )
    from stability.models.catalog import check_model_args, check_model_input

    ds = cfg.dataset
    check_dataset_options(ds.name, ds.options)
    img_size = resolve_img_size(ds.name, ds.img_size)
    check_model_args(cfg.model, cfg.model_args)
    check_model_input(cfg.model, img_size, cfg.model_args)
    check_batch_size(ds.name, ds.options, cfg.train.batch_size)


def check_factors(cfg: TrialConfig) -> None:
    """Distillation needs a teacher checkpoint when training alone, made for this data; patch losses
    need patch tokens."""
    from stability.data.checks import data_shape, resolve_img_size
    from stability.models import has_patch_tokens
    from stability.train.teacher import (
        check_teacher_fits,
        load_checkpoint,
        teacher_is_checkpoint,
    )

    if cfg.train.patch_losses.active and not has_patch_tokens(cfg.model):
        raise UsageError(f"train.patch_losses: {cfg.model} has no patch tokens; use a transformer model")
    distill = cfg.train.distillation
    if distill.active:
        if not teacher_is_checkpoint(distill.teacher):
            raise UsageError(f"train.distillation.teacher {distill.teacher!r}: alone, a trial needs a teacher checkpoint "
                             f"(train one with --model {distill.teacher} ... --save-checkpoint t.pt); a sweep trains it for you")
        checkpoint = load_checkpoint(distill.teacher)  # TrialSetupError when it cannot serve as a teacher
        ds = cfg.dataset
        try:
            check_teacher_fits(checkpoint, **data_shape(ds.name, resolve_img_size(ds.name, ds.img_size), ds.options))
        except TrialSetupError as exc:
            raise UsageError(f"train.distillation.teacher {distill.teacher}: {exc}") from None


def train(argv: list[str] | None = None) -> dict:
    """Run one trial from command-line arguments and return its metrics."""
    from stability.train.engine import resolve_device, run_trial
    from stability.train.teacher import check_writable

    args = parse_args(argv)
    cfg = config_from_args(args)
    validate(cfg)
    device = resolve_device(args.device)
    if args.save_checkpoint is not None:
        try:
            check_writable(args.save_checkpoint)
        except TrialSetupError as exc:
            raise UsageError(f"--save-checkpoint: {exc}") from None
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        metrics = run_trial(cfg, device=device, log=log, checkpoint_to=args.save_checkpoint)
    except OSError as exc:
        if args.save_checkpoint is None or not _writing_to(args.save_checkpoint, exc):
            raise
        # written last, after training: the disk filled up or went away meanwhile
        raise UsageError(f"--save-checkpoint: cannot write {args.save_checkpoint}: {exc.strerror or exc}") from None
    metrics.pop("curve")
    return {"trial_id": cfg.trial_id, **cfg.model_dump(mode="json", include={"model", "optimizer", "lr", "weight_decay", "epochs", "seed"}), **metrics}


def _writing_to(path: str, exc: OSError) -> bool:
    """Whether `exc` arose writing `path` (the file itself, or the temporary file beside it)."""
    folder = Path(path).absolute().parent
    names = [Path(n).absolute() for n in (exc.filename, exc.filename2) if isinstance(n, (str, os.PathLike))]
    return any(n == folder or folder in n.parents or n in folder.parents for n in names)


def _json_safe(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def main(argv: list[str] | None = None) -> int:
    from stability.data import DatasetError

    try:
        metrics = train(argv)
    except (UsageError, SpecError, TrialSetupError, DatasetError) as exc:  # the user's to fix; other errors are bugs
        fail(str(exc))
    print(json.dumps({k: _json_safe(v) for k, v in metrics.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
