"""The cost of mid-trial checkpoints, side by side in one process: the default study's trials
trained by the engine with checkpoints off, at the default interval (`resources.checkpoint_every`
unset: after the first epoch ending 5 minutes after the last checkpoint) and at every epoch. The
three ways run interleaved trial by trial (their order rotating), so drift of the machine hits
each alike. Prints the wall times, the ratios to "off" and the cost of one checkpoint.

    python -m benchmarks.checkpoint_cost [--trials 8] [--epochs 15] [--threads 1]

In-process on purpose: a whole sweep's wall time carries Ray's start-up and scheduling noise,
which on a small machine is larger than the 2% this measures.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.checkpoint_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8, help="trials of the default study's plan (default 8)")
    parser.add_argument("--epochs", type=int, default=15, help="epochs per trial (default 15, as the default study)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the sweep gives each trial 1)")
    args = parser.parse_args(argv)

    import torch

    from stability.sampling import plan_trials
    from stability.spec import load_spec
    from stability.train.engine import run_trial
    from stability.train.checkpoint import CheckpointPolicy, TrialCheckpoint

    torch.set_num_threads(args.threads)
    plan = [cfg.model_copy(update={"epochs": args.epochs}) for cfg in plan_trials(load_spec("default"))[:args.trials]]
    ways = {"off": None, "default interval": CheckpointPolicy(), "every epoch": CheckpointPolicy(every_epochs=1)}
    seconds = dict.fromkeys(ways, 0.0)
    saves = 0
    size = 0
    run_trial(plan[0].model_copy(update={"epochs": 1}), device="cpu")  # warm-up: imports, allocator, data
    with tempfile.TemporaryDirectory() as tmp:
        for i, cfg in enumerate(plan):
            names = list(ways)
            for name in names[i % 3:] + names[:i % 3]:
                policy = ways[name]
                checkpoint = None if policy is None else TrialCheckpoint(Path(tmp) / f"{name}-{i}", policy)
                if checkpoint is not None:
                    original = checkpoint.save

                    def counted(state, original=original):
                        nonlocal saves, size
                        original(state)
                        if name == "every epoch":
                            saves += 1
                            size = Path(checkpoint.path).stat().st_size

                    checkpoint.save = counted
                start = time.perf_counter()
                run_trial(cfg, device="cpu", checkpoint=checkpoint)
                seconds[name] += time.perf_counter() - start
    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"torch {torch.__version__}, {args.threads} thread(s)")
    print(f"{len(plan)} trials of the default study (digits 8 px, {args.epochs} epochs), each way interleaved")
    print(f"{'way':20s} {'wall s':>8s} {'vs off':>8s}")
    for name, value in seconds.items():
        print(f"{name:20s} {value:8.2f} {value / seconds['off']:8.3f}")
    per_save = (seconds["every epoch"] - seconds["off"]) / max(1, saves)
    print(f"one checkpoint: {1000 * per_save:.1f} ms ({size / 1e6:.2f} MB), {saves} saved at every epoch")
    print(f"ratio default interval / off: {seconds['default interval'] / seconds['off']:.3f} (target <= 1.02)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
