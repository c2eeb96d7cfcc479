"""Fused trials vs one by one: K sampled configs of the default study's models trained (a) one
after another with `stability.train.engine.run_trial` and (b) together with
`stability.train.fused.run_fused_trials`, in one process, with the same torch thread count. Prints
the wall time of each way, the study throughput (trials per minute), their ratio (fused / one by
one; issue targets: >= 1.5 on a 2-core CPU with K=8 tiny models, >= 8 on one H100 with K=16 at
32 px) and the largest per-trial top-1 difference between the two ways.

    python -m benchmarks.fused_trials                      # CPU: K=8, digits at 8 px, 5 epochs
    python -m benchmarks.fused_trials --device cuda --img-size 32 -k 16 --json fused.json
    (or: python -m benchmarks fused ...)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

import torch

from stability.data import DatasetError
from stability.sampling import plan_trials
from stability.spec import SpecError, load_spec
from stability.spec.trial import TrialConfig
from stability.train.engine import resolve_device, run_trial
from stability.train.fused import check_fusable_configs, run_fused_trials


def planned_groups(args: argparse.Namespace) -> dict[str, list[TrialConfig]]:
    """Per model: the first K planned trials of the default study for the chosen optimizer."""
    overrides = [f"samples={args.k}", f"epochs={args.epochs}", f"dataset.name={args.dataset}",
                 f"dataset.img_size={args.img_size}", f"train.batch_size={args.batch_size}", "name=fused_bench",
                 f"models=[{','.join(args.models)}]"]
    plan = plan_trials(load_spec("default", overrides))
    return {model: [c for c in plan if c.model == model and c.optimizer == args.optimizer][:args.k]
            for model in args.models}


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fused_trials", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", type=int, default=8, help="trials fused per model (default 8)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--img-size", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dataset", default="digits", help="digits (8-64 px) or synthetic")
    parser.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"))
    parser.add_argument("--models", type=lambda s: s.split(","), default=["vit_p_tiny", "vit_c_tiny"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads for both ways")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.k < 1 or args.epochs < 1:
        parser.error("-k and --epochs must be positive")
    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        groups = planned_groups(args)
        for cfgs in groups.values():
            check_fusable_configs(cfgs)
        warm = [c.model_copy(update={"epochs": 1}) for c in next(iter(groups.values()))[:2]]
        run_trial(warm[0], device)  # imports, kernels and the dataset cache, for both ways
        run_fused_trials(warm, device)
    except (ValueError, DatasetError, SpecError) as exc:  # bad input: spec, dataset, model or device
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return 2

    rows = []
    for model, cfgs in groups.items():
        alone, alone_s = timed(lambda: [run_trial(c, device) for c in cfgs])
        fused, fused_s = timed(lambda: run_fused_trials(cfgs, device))
        diff = max(abs(a["top1_err"] - f["top1_err"]) for a, f in zip(alone, fused))
        rows.append((model, len(cfgs), alone_s, fused_s, diff))

    print(f"machine: {platform.node()}, {device_name(device)}, torch {torch.__version__}, {args.threads} torch threads")
    print(f"{args.dataset} at {args.img_size} px, batch {args.batch_size}, {args.epochs} epochs, {args.optimizer}, "
          f"K trials per model from the default study's sampled points")
    print(f"{'model':12s} {'K':>3s} {'one by one s':>13s} {'fused s':>9s} {'trials/min 1x1':>15s} "
          f"{'trials/min fused':>17s} {'ratio':>6s} {'max |d top1|':>13s}")
    for model, k, alone_s, fused_s, diff in rows:
        print(f"{model:12s} {k:3d} {alone_s:13.1f} {fused_s:9.1f} {60 * k / alone_s:15.1f} {60 * k / fused_s:17.1f} "
              f"{alone_s / fused_s:6.2f} {diff:13.2f}")
    total_alone, total_fused = sum(r[2] for r in rows), sum(r[3] for r in rows)
    target = ">= 8 on one H100 with K=16 at 32 px" if device.type == "cuda" else ">= 1.5 on a 2-core CPU with K=8"
    print(f"ratio fused / one by one (study throughput): {total_alone / total_fused:.2f}  (target {target})")
    if args.json:
        write_json(args, device, rows)
    return 0


def write_json(args: argparse.Namespace, device: torch.device, rows: list[tuple]) -> None:
    """The settings, one row per model and the overall ratio (study throughput, fused / one by one)."""
    record = {
        "date": datetime.date.today().isoformat(),
        "machine": {"host": platform.node(), "device": device_name(device), "torch": torch.__version__,
                    "threads": args.threads},
        "settings": {"k": args.k, "epochs": args.epochs, "img_size": args.img_size, "batch_size": args.batch_size,
                     "dataset": args.dataset, "optimizer": args.optimizer, "device": str(device)},
        "rows": [{"model": model, "k": k, "one_by_one_s": alone_s, "fused_s": fused_s, "ratio": alone_s / fused_s,
                  "max_abs_top1_diff": diff} for model, k, alone_s, fused_s, diff in rows],
        "ratio": sum(r[2] for r in rows) / sum(r[3] for r in rows),
    }
    with open(args.json, "w") as fh:
        json.dump(record, fh, indent=2)
        fh.write("\n")


if __name__ == "__main__":
    raise SystemExit(main())
