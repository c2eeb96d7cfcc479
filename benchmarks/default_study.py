"""The default study's wall time, side by side in one run: its earlier shape (one seed per point,
one trial per process: 32 trials) against the shape it ships with (two seeds per point, so the
report can show seed noise: 64 trials, trained in fused groups). Each way is a whole
`python -m stability.sweep default` (Ray start-up included) into a fresh folder; a third way,
two seeds one trial per process, shows what the fused groups pay for. The ways alternate over
`--rounds` so that drift of the machine hits each alike. Prints the wall times and the ratios.

    python -m benchmarks.default_study [--rounds 1] [--skip-unfused]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile

from benchmarks.fused_sweep import timed_sweep
from stability.spec import load_spec

WAYS = {
    "earlier: 1 seed, one trial per process": ["repeats=1", "resources.fused_trials=1"],
    "shipped: 2 seeds, fused groups": [],
    "2 seeds, one trial per process": ["resources.fused_trials=1"],
}


def sweep_seconds(storage: str, name: str, sets: list[str]) -> float:
    return timed_sweep(storage, [f"name={name}", *sets])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.default_study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1, help="times each way runs (alternating; default 1)")
    parser.add_argument("--skip-unfused", action="store_true", help="leave out the third way (2 seeds, unfused)")
    args = parser.parse_args(argv)
    ways = {k: v for i, (k, v) in enumerate(WAYS.items()) if i < 2 or not args.skip_unfused}
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
    print(f"{'way':42s} {'wall s':>8s}")
    for label, value in seconds.items():
        print(f"{label:42s} {value:8.1f}")
    labels = list(seconds)
    print(f"ratio shipped / earlier: {seconds[labels[1]] / seconds[labels[0]]:.2f} (target: near 1)")
    if len(labels) > 2:
        print(f"ratio 2 seeds unfused / fused: {seconds[labels[2]] / seconds[labels[1]]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
