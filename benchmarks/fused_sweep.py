"""Study throughput of whole sweeps: the same K x 2 trials (vit_p_tiny and vit_c_tiny, K AdamW
points of the default study, digits at 8 px) run by `python -m stability.sweep` (a) one trial per
process, one CPU each, (b) with `resources.fused_trials: K`, one CPU per fused group, and (c) fused
with 2 CPUs per group. Ray start-up is included in every way. Prints the wall times and the ratios
one-by-one / fused (issue "Performance": at least 1.5x on a 2-core CPU with K=8).

    python -m benchmarks.fused_sweep [-k 8] [--epochs 5]    (or: python -m benchmarks fused_sweep ...)
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time


def timed_sweep(storage: str, sets: list[str], study: str = "default") -> float:
    """Wall seconds of one whole `python -m stability.sweep STUDY --storage STORAGE --set ...` run."""
    argv = [sys.executable, "-m", "stability.sweep", study, "--storage", storage, *[x for s in sets for x in ("--set", s)]]
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def sweep_seconds(storage: str, name: str, k: int, epochs: int, fused: int, cpus: int) -> float:
    return timed_sweep(storage, [
        f"name={name}", f"samples={k}", f"epochs={epochs}",
        "optimizers={adamw: {lr: {log_uniform: [2.5e-4, 8.0e-3]}, weight_decay: {log_uniform: [0.02, 0.8]}}}",
        f"resources.fused_trials={fused}", f"resources.cpus_per_worker={cpus}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fused_sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", type=int, default=8, help="trials per model (= fused group size)")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as storage:
        ways = [("one by one, 1 CPU per trial", 1, 1), (f"fused_trials={args.k}, 1 CPU per group", args.k, 1),
                (f"fused_trials={args.k}, 2 CPUs per group", args.k, 2)]
        times = [sweep_seconds(storage, f"fused_sweep_{i}", args.k, args.epochs, fused, cpus)
                 for i, (_, fused, cpus) in enumerate(ways)]
    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"{2 * args.k} trials (vit_p_tiny + vit_c_tiny, AdamW, digits 8 px, {args.epochs} epochs), Ray start-up included")
    print(f"{'way':40s} {'wall s':>8s}")
    for (label, _, _), seconds in zip(ways, times):
        print(f"{label:40s} {seconds:8.1f}")
    print(f"ratio one-by-one / fused: {times[0] / times[1]:.2f} (1 CPU per group), "
          f"{times[0] / times[2]:.2f} (2 CPUs per group)  (target >= 1.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
