"""Per-trial overhead: the same tiny digits trials run (a) back to back with
`python -m stability.train`, one process each, and (b) by `python -m stability.sweep`, Ray
start-up included. Prints both wall times and the ratio sweep / loop (issue "Performance":
the target is at most 0.8).

    python -m benchmarks.trial_overhead [--trials 8] [--epochs 5]    (or: python -m benchmarks overhead ...)
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

from stability.sampling import plan_trials
from stability.spec import load_spec
from stability.spec.trial import TrialConfig


def train_argv(cfg: TrialConfig) -> list[str]:
    """The `stability.train` command line that reproduces one planned trial."""
    argv = ["--model", cfg.model, "--optimizer", cfg.optimizer, "--lr", repr(cfg.lr),
            "--weight-decay", repr(cfg.weight_decay), "--epochs", str(cfg.epochs), "--seed", str(cfg.seed),
            "--dataset", cfg.dataset.name, "--img-size", str(cfg.dataset.img_size),
            "--batch-size", str(cfg.train.batch_size), "--device", "cpu", "--quiet"]
    for key, value in cfg.train.model_dump(exclude_defaults=True).items():
        if key != "batch_size":
            argv += ["--set", f"train.{key}={value}"]
    return argv


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.trial_overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8, help="trials (a multiple of 4: 2 models x 2 optimizers)")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    overrides = [f"samples={args.trials // 4}", f"epochs={args.epochs}", "name=overhead_bench"]
    plan = plan_trials(load_spec("default", overrides))
    env = dict(os.environ)

    loop = sum(timed([sys.executable, "-m", "stability.train", *train_argv(cfg)], env) for cfg in plan)
    with tempfile.TemporaryDirectory() as storage:
        set_args = [item for o in overrides for item in ("--set", o)]
        sweep = timed([sys.executable, "-m", "stability.sweep", "default", *set_args, "--storage", storage], env)

    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"{len(plan)} digits trials x {args.epochs} epochs (default study: vit_p_tiny/vit_c_tiny, 8 px)")
    print(f"{'way':44s} {'wall s':>8s}")
    print(f"{'loop of python -m stability.train':44s} {loop:8.1f}")
    print(f"{'python -m stability.sweep (Ray start incl.)':44s} {sweep:8.1f}")
    print(f"ratio sweep / loop: {sweep / loop:.2f}  (target <= 0.80)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
