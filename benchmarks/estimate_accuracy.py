"""The sweep's cost estimate against the wall time it predicts, side by side in one run.

For each study (the built-in `default`; a 2-model imagefolder study on JPEGs this script writes):

1. `python -m stability.sweep STUDY --dry-run --calibrate` in a fresh storage: the estimate from a
   calibration in this one process (a few engine steps per shape, cached in <storage>/.calibration/);
2. `python -m stability.sweep STUDY --calibrate` in another fresh storage, timed end to end (Ray start-up
   included): the actual wall time. The run calibrates first, in Ray tasks, as many at once as trials
   will share the machine, and prints its estimate; a dry run in a third storage holding only that
   cache gives the same figure in seconds (plus the calibration's own seconds, which the run spent);
3. `python -m stability.sweep STUDY --set name=... --dry-run` in the run's storage: the estimate from
   the curves of the study just run (the per-epoch `elapsed_s` of its trials).

Prints both estimates, the actual wall time and each ratio estimate / actual (target 0.75-1.25),
with the load average before and after each run (the machine may be shared).

    python -m benchmarks.estimate_accuracy [--studies default,imagefolder] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGEFOLDER_STUDY = """\
name: imagefolder_pair
description: ViT_P vs ViT_C tiny on a small JPEG folder (the estimate benchmark)
dataset: {{name: imagefolder, root: {root}, img_size: 32}}
models: [vit_p_tiny, vit_c_tiny]
optimizers:
  adamw: {{lr: {{log_uniform: [2.5e-4, 8.0e-3]}}, weight_decay: {{log_uniform: [0.02, 0.8]}}}}
samples: 4
epochs: 3
seed: 0
train: {{batch_size: 64, warmup_epochs: 1}}
resources: {{workers_per_trial: 1, cpus_per_worker: 1}}
"""


def write_jpegs(root: Path, classes: int = 10, train: int = 64, val: int = 16, size: int = 96) -> None:
    """An ImageNet-style folder of real JPEGs (quality 90): a colour per class plus noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        colour = rng.integers(0, 256, 3)
        for split, n in (("train", train), ("val", val)):
            folder = root / split / f"class_{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(colour + rng.integers(-40, 41, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)


def sweep(*argv: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "stability.sweep", *argv], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"stability.sweep {' '.join(argv)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out, seconds


def dry_estimate(*argv: str) -> dict:
    out, _ = sweep(*argv, "--dry-run")
    return json.loads(out.stdout.strip().splitlines()[-1])["estimate"]


def measure(study: str, name: str, storage: str) -> dict:
    import re
    import shutil

    calibrated = dry_estimate(study, "--storage", f"{storage}_lone", "--calibrate")
    load_before = os.getloadavg()[0]
    out, actual = sweep(study, "--storage", storage, "--calibrate")  # on a CPU box a run calibrates when asked
    load_after = os.getloadavg()[0]
    printed = next((line for line in out.stderr.splitlines() if line.startswith("estimate: ")), "")
    spent = re.search(r"\+ (\d+) s of calibration", printed)
    shutil.copytree(Path(storage) / ".calibration", Path(f"{storage}_cache") / ".calibration")
    by_run = dry_estimate(study, "--storage", f"{storage}_cache")
    from_curves = dry_estimate(study, "--storage", storage, "--set", f"name={name}_again")
    run_s = by_run["wall_s"] + (int(spent.group(1)) if spent else 0) if by_run["wall_s"] is not None else None
    return {"study": name, "actual_s": actual, "calibration_estimate_s": calibrated["wall_s"],
            "run_calibration_estimate_s": run_s, "curves_estimate_s": from_curves["wall_s"],
            "calibration_basis": calibrated["basis"], "curves_basis": from_curves["basis"], "printed": printed,
            "load_before": load_before, "load_after": load_after}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.estimate_accuracy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", default="default,imagefolder", help="comma-separated: default, imagefolder")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="estimate-") as tmp:
        for which in [s for s in args.studies.split(",") if s]:
            storage = str(Path(tmp) / f"runs_{which}")
            if which == "default":
                rows.append(measure("default", "default", storage))
            elif which == "imagefolder":
                root = Path(tmp) / "jpegs"
                write_jpegs(root)
                study = Path(tmp) / "imagefolder_pair.yaml"
                study.write_text(IMAGEFOLDER_STUDY.format(root=root))
                rows.append(measure(str(study), "imagefolder_pair", storage))
            else:
                parser.error(f"unknown study {which!r}: default or imagefolder")
            print(json.dumps(rows[-1]), flush=True)  # each row as soon as it is measured
    print(f"date: {datetime.date.today()}  machine: {platform.node()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}")
    print(f"{'study':18s} {'actual s':>9s} | estimate s, ratio: {'lone calibration':>22s} {'the run':>16s} "
          f"{'curves':>16s} | load 1 min before/after")
    for r in rows:
        cells = "".join(f" {r[k] or float('nan'):9.1f} {(r[k] or float('nan')) / r['actual_s']:6.2f}"
                        for k in ("calibration_estimate_s", "run_calibration_estimate_s", "curves_estimate_s"))
        print(f"{r['study']:18s} {r['actual_s']:9.1f} |{cells} | {r['load_before']:.2f} / {r['load_after']:.2f}")
    for r in rows:
        print(f"{r['study']}: the run printed: {r['printed']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
