"""The report of a paper-sized study: how long `python -m stability.report --json` takes.

    python -m benchmarks.report_build [--runs 3] [--keep DIR]

Writes the synthetic study of `tests/paper_study.py` (9 models x 2 optimizers x 64 points, 1152
trials; run from the repository) to a temporary folder. Side by side, in this process, for every
group: the exact bands (EDF band and tuning curve with its band, `analysis.bands`, the first
group of each size paying opda's simulated critical value) against the bootstrap bands they
replace in the figures (pointwise EDF band on a 200-point grid and the expected best of k with its
band, 200 resamples each); their ratio. Then the whole report `--runs` times, each in a fresh
process as a user would: each run's wall time and the CPU time of the report process (user +
system: on a box other jobs load, the wall time grows and the CPU time much less), and the
medians against the target (15 s wall on a 2-core machine).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 15.0


def one_build(study: Path, out: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one report build in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stability.report", str(study), "--out", str(out), "--json"], cwd=REPO,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bands_side_by_side(study: Path) -> tuple[float, float]:
    """(s of the exact bands, s of the bootstrap ones) over every group of the study."""
    import pandas as pd

    from stability.analysis import bands
    from stability.analysis.edf import edf_band, edf_grid
    from stability.analysis.stats import ERROR, expected_best_curve, iter_groups, usable_trials

    groups = [g[ERROR].to_numpy(float) for _, g in iter_groups(usable_trials(pd.read_parquet(study / "trials.parquet")),
                                                               ["optimizer", "model"])]
    bands._bands.cache_clear()
    start = time.perf_counter()
    for e in groups:
        bands.edf_band(e, seed=1234)  # a seed no earlier call used: opda simulates its critical value afresh
        bands.tuning_curve(e, seed=1234)
    exact = time.perf_counter() - start
    start = time.perf_counter()
    for e in groups:
        edf_band(e, edf_grid(e), n_boot=200)
        expected_best_curve(e, n_boot=200)
    return exact, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report_build", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="report builds timed (default 3)")
    p.add_argument("--keep", default=None, metavar="DIR", help="write the study and the reports here, and keep them")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    from paper_study import make_paper_study

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        study = make_paper_study(root / "runs")
        exact, boot = bands_side_by_side(study)
        print(f"bands of 18 groups: exact {exact:.2f} s, bootstrap {boot:.2f} s; ratio exact / bootstrap "
              f"{exact / boot:.2f}", flush=True)
        walls, cpus = [], []
        for i in range(args.runs):
            wall, cpu = one_build(study, root / f"report-{i}.html")
            walls.append(wall)
            cpus.append(cpu)
            print(f"run {i + 1}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    print(f"paper-sized report (1152 trials): median {wall:.1f} s wall, {cpu:.1f} s CPU; target {TARGET_S:.0f} s wall "
          f"({'met' if wall < TARGET_S else 'missed'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
