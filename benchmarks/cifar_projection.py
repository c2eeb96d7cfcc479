"""What a CIFAR-10 study costs on this machine: fused epochs of CIFAR-10's shape, projected to the study.

For each model of a study (default `cifar10_lr_wd`: ViT_P/ViT_C tiny and small, 32 px, batch 512,
256 trials x 50 epochs), one fused group of its first K planned trials (`run_fused_trials`, the
study's own recipe, bf16 on CUDA) trains on synthetic data of CIFAR-10's size: 50,000 training and
10,000 validation images, 32 px, 10 classes, held and augmented on the device like CIFAR-10 itself
(nothing is read from disk). The first epoch is warm-up; the later ones are timed (training plus
validation). With `--fraction F` < 1 each epoch holds F of CIFAR-10's images and the timed epoch
is scaled by 1/F (said in the output). The projection per model:

    group_s = overhead_s + study epochs x epoch_s     (overhead: set-up, warm-up excess, final metrics)
    model_s = groups x group_s                        (groups: ceil(trials / K) per optimizer)

and the study's projected minutes on this one device are the sum over models, groups run one after
another. A group that runs out of device memory is retried with K halved (the K used is reported).

    python -m benchmarks.cifar_projection --json cifar.json          # CUDA: K=16, full-size epochs
    python -m benchmarks.cifar_projection --device cpu               # CPU smoke test: tiny sizes
    (or: python -m benchmarks cifar_projection ...)
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import platform
import sys
import time
from collections import Counter
from typing import Any

from benchmarks.targets import CIFAR_TARGET_MINUTES as TARGET_MINUTES
from stability.cli import first_line

TRAIN_IMAGES, VAL_IMAGES, CLASSES, IMG_SIZE = 50_000, 10_000, 10, 32  # CIFAR-10's shape
CUDA_DEFAULTS = {"k": 16, "fraction": 1.0, "batch_size": None}  # batch None: the study's own (512)
CPU_DEFAULTS = {"k": 2, "fraction": 0.002, "batch_size": 20}  # a smoke test: 100 training images, 5 steps


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cifar_projection", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="cifar10_lr_wd", help="built-in study or YAML path (default cifar10_lr_wd)")
    parser.add_argument("--models", type=lambda s: [m for m in s.split(",") if m], default=None,
                        help="comma-separated subset of the study's models (default: all of them)")
    parser.add_argument("-k", type=int, default=None, help="trials per fused group (default 16; 2 on the CPU)")
    parser.add_argument("--fraction", type=float, default=None,
                        help="share of CIFAR-10's images per timed epoch, in (0, 1] (default 1; 0.002 on the CPU)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="per-trial batch instead of the study's (default: the study's; 20 on the CPU)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per group: 1 warm-up + timed ones (default 2)")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (CUDA when present)")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write the results as JSON (after each model)")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (one warm-up epoch, then timed ones)")
    if args.fraction is not None and not 0 < args.fraction <= 1:
        parser.error("--fraction must be in (0, 1]")
    if (args.k is not None and args.k < 1) or (args.batch_size is not None and args.batch_size < 1):
        parser.error("-k and --batch-size must be positive")
    return args


def groups_per_model(plan: list) -> dict[str, Counter]:
    """model -> Counter(optimizer -> planned trials): groups never mix optimizers."""
    counts: dict[str, Counter] = {}
    for cfg in plan:
        counts.setdefault(cfg.model, Counter())[cfg.optimizer] += 1
    return counts


def group_count(trials_by_optimizer: Counter, k: int) -> int:
    return sum(math.ceil(n / k) for n in trials_by_optimizer.values())


def proxy_configs(plan: list, model: str, k: int, fraction: float, batch_size: int | None, epochs: int) -> list:
    """The first k planned trials of `model` (one optimizer), on synthetic data of CIFAR-10's shape."""
    from stability.spec.trial import DatasetConfig

    first = next(cfg for cfg in plan if cfg.model == model)
    members = [cfg for cfg in plan if cfg.model == model and cfg.optimizer == first.optimizer][:k]
    dataset = DatasetConfig(name="synthetic", img_size=IMG_SIZE, options={
        "train_size": max(1, round(TRAIN_IMAGES * fraction)), "val_size": max(1, round(VAL_IMAGES * fraction)),
        "num_classes": CLASSES})
    train = {"batch_size": batch_size} if batch_size else {}
    return [cfg.model_copy(update={"dataset": dataset, "epochs": epochs,
                                   "train": cfg.train.model_copy(update=train)}) for cfg in members]


def project(epoch_s: float, overhead_s: float, study_epochs: int, groups: int) -> float:
    """Seconds for `groups` fused groups of `study_epochs` epochs each, one after another."""
    return groups * (overhead_s + study_epochs * epoch_s)


def time_group(cfgs: list, device, epochs: int) -> dict[str, float]:
    """Run one fused group; the mean timed epoch (training + validation) and the rest of its wall time."""
    from stability.train.fused import run_fused_trials

    first_seen: dict[int, float] = {}
    start = time.perf_counter()
    results = run_fused_trials(cfgs, device, on_epoch=lambda _k, point: first_seen.setdefault(
        point["epoch"], time.perf_counter()))
    wall = time.perf_counter() - start
    if len(first_seen) < epochs:
        raise RuntimeError(f"only {len(first_seen)} of {epochs} epochs ran (every trial diverged?)")
    epoch_s = (first_seen[epochs] - first_seen[1]) / (epochs - 1)
    return {"epoch_s": epoch_s, "overhead_s": wall - epochs * epoch_s, "wall_s": wall,
            "diverged": sum(r["status"] != "ok" for r in results)}


def run_model(plan: list, model: str, settings: dict[str, Any], device, log=print) -> dict[str, Any]:
    """Time one model's fused group, halving K on out-of-memory; the row of the JSON record."""
    import torch

    k = settings["k"]
    while True:
        cfgs = proxy_configs(plan, model, k, settings["fraction"], settings["batch_size"], settings["epochs"])
        try:
            timing = time_group(cfgs, device, settings["epochs"])
            break
        except torch.cuda.OutOfMemoryError:
            if k == 1:
                raise
        gc.collect()  # outside the handler: the traceback no longer holds the group's tensors
        if device.type == "cuda":
            torch.cuda.empty_cache()
        log(f"{model}: out of memory with K={k}; retrying with K={k // 2}")
        k //= 2
    groups = group_count(settings["counts"][model], len(cfgs))
    full_epoch_s = timing["epoch_s"] / settings["fraction"]
    model_s = project(full_epoch_s, timing["overhead_s"], settings["study_epochs"], groups)
    return {"model": model, "k": len(cfgs), "batch_size": cfgs[0].train.batch_size, "groups": groups,
            "trials": sum(settings["counts"][model].values()), "timed_epoch_s": timing["epoch_s"],
            "epoch_s": full_epoch_s, "overhead_s": timing["overhead_s"], "group_wall_s": timing["wall_s"],
            "diverged": timing["diverged"], "projected_s": model_s,
            "train_images_per_s": len(cfgs) * TRAIN_IMAGES / full_epoch_s}


def record(rows: list[dict[str, Any]], settings: dict[str, Any], device, errors: dict[str, str]) -> dict[str, Any]:
    import torch

    total_s = sum(r["projected_s"] for r in rows)
    complete = not errors and len(rows) == len(settings["models"])
    return {
        "date": datetime.date.today().isoformat(),
        "machine": {"host": platform.node(), "torch": torch.__version__, "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "settings": {key: settings[key] for key in ("study", "models", "k", "fraction", "batch_size", "epochs",
                                                     "study_epochs", "precision")},
        "cifar10_shape": {"train": TRAIN_IMAGES, "val": VAL_IMAGES, "classes": CLASSES, "img_size": IMG_SIZE},
        "rows": rows, "errors": errors,
        "projected_minutes": total_s / 60 if complete else None,
        "target_minutes": TARGET_MINUTES,
    }


def write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from stability.data import DatasetError
    from stability.sampling import plan_trials
    from stability.spec import SpecError, TrialSetupError, load_spec
    from stability.train.engine import resolve_device

    try:
        device = resolve_device(args.device)
        spec = load_spec(args.study)
        plan = plan_trials(spec)
    except (SpecError, TrialSetupError, DatasetError) as exc:
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    defaults = CUDA_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    models = args.models or list(dict.fromkeys(cfg.model for cfg in plan))
    unknown = sorted(set(models) - {cfg.model for cfg in plan})
    if unknown:
        print(f"error: {', '.join(unknown)} not in study {spec.name}", file=sys.stderr)
        return 2
    settings = {"study": spec.name, "models": models, "k": args.k or defaults["k"],
                "fraction": args.fraction or defaults["fraction"],
                "batch_size": args.batch_size or defaults["batch_size"], "epochs": args.epochs,
                "study_epochs": max(cfg.epochs for cfg in plan), "counts": groups_per_model(plan),
                "precision": plan[0].train.precision if device.type == "cuda" else "fp32 (CPU)"}
    share = f" x {settings['fraction']:g}" if settings["fraction"] < 1 else ""
    print(f"{spec.name}: {len(plan)} trials; proxy: synthetic {IMG_SIZE} px, {TRAIN_IMAGES:,}/{VAL_IMAGES:,} images"
          f"{share} per epoch, fused K={settings['k']}, {args.epochs - 1} timed epoch(s) after 1 warm-up, on {device}",
          flush=True)
    if settings["fraction"] < 1:
        print(f"timing {settings['fraction']:g} of an epoch and scaling it by {1 / settings['fraction']:g}", flush=True)
    rows, errors = [], {}
    for model in models:
        try:
            rows.append(run_model(plan, model, settings, device))
        except (RuntimeError, ValueError) as exc:  # out of memory even at K=1, a diverged group, a refused config
            errors[model] = first_line(exc)
            print(f"{model} failed: {errors[model]}", flush=True)
        else:
            r = rows[-1]
            print(f"{model:12s} K={r['k']:<3d} batch {r['batch_size']:<4d} epoch {r['epoch_s']:8.2f} s  "
                  f"overhead {r['overhead_s']:6.2f} s  {r['groups']} groups  -> {r['projected_s'] / 60:8.1f} min",
                  flush=True)
        if args.json:
            write_json(args.json, record(rows, settings, device, errors))
    result = record(rows, settings, device, errors)
    if result["projected_minutes"] is None:
        print("projection incomplete: a model failed")
        return 1
    minutes = result["projected_minutes"]
    print(f"projected {spec.name} ({len(plan)} trials x {settings['study_epochs']} epochs) on this device: "
          f"{minutes:.1f} min (target <= {TARGET_MINUTES:g} min on one H200)")
    print(f"ratio projected / target minutes: {minutes / TARGET_MINUTES:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
