"""The default study's wall time, side by side in one run: its earlier shape (one seed per point,
15 epochs, one trial per process: 32 trials) against the shape it ships with (two seeds per point,
so the report can show seed noise, 10 epochs: 64 trials, trained in fused groups). Each way is a
whole `python -m stability.sweep default` (Ray start-up included) into a fresh folder; a third way,
the shipped shape at the earlier 15 epochs, shows what the shorter schedule pays for. The ways
alternate over `--rounds` so that drift of the machine hits each alike. Prints the wall times and
the ratios.

    python -m benchmarks.default_study [--rounds 1] [--skip-third]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile

from benchmarks.fused_sweep import timed_sweep
from stability.spec import load_spec

WAYS = {
    "earlier: 1 seed, 15 epochs, one trial per process": ["repeats=1", "resources.fused_trials=1", "epochs=15"],
    "shipped: 2 seeds, 10 epochs, fused groups": [],
    "2 seeds, 15 epochs, fused groups": ["epochs=15"],
}


def sweep_seconds(storage: str, name: str, sets: list[str]) -> float:
    return timed_sweep(storage, [f"name={name}", *sets])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.default_study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1, help="times each way runs (alternating; default 1)")
    parser.add_argument("--skip-third", action="store_true", help="leave out the third way (shipped shape at 15 epochs)")
    args = parser.parse_args(argv)
    ways = {k: v for i, (k, v) in enumerate(WAYS.items()) if i < 2 or not args.skip_third}
    spec = load_spec("default")
    seconds = dict.fromkeys(ways, 0.0)
    with tempfile.TemporaryDirectory() as storage:
        for r in range(args.rounds):
            names = list(ways)
            for i, label in enumerate(names[r % len(names):] + names[:r % len(names)]):
                seconds[label] += sweep_seconds(storage, f"default_{r}_{i}", ways[label]) / args.rounds
    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"default study: {len(spec.models)} models x {len(spec.optimizers)} optimizers x {spec.samples} points, "
          f"{spec.epochs} epochs, shipped with repeats={spec.repeats}, "
          f"fused_trials={spec.resources.fused_trials}; Ray start-up included, mean of {args.rounds} round(s)")
    print(f"{'way':52s} {'wall s':>8s}")
    for label, value in seconds.items():
        print(f"{label:52s} {value:8.1f}")
    labels = list(seconds)
    print(f"ratio shipped / earlier: {seconds[labels[1]] / seconds[labels[0]]:.2f} (target: near 1)")
    if len(labels) > 2:
        print(f"ratio 15 / 10 epochs (2 seeds, fused): {seconds[labels[2]] / seconds[labels[1]]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
