"""Orchestration share of a study's wall time, for trials of about one minute.

Starts a local Ray cluster first (as on a cluster that is already up), then times
`python -m stability.sweep --address ...` end to end and compares it with the trials' own work:
the sum of their `wall_time_s` (data, model build, training, evaluation, as measured inside each
trial) divided by the trials that run at once. Share = 1 - ideal / wall: everything the platform
adds (driver start, spec checks, Tune start, placement, result writing, summary). Issue
"Performance": at most 5% for 1-minute trials.

    python -m benchmarks.orchestration_share [--trials 4] [--epochs 40]    (or: python -m benchmarks orchestration ...)
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.orchestration_share", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4, help="trials (vit_c_tiny, AdamW, digits at 16 px)")
    parser.add_argument("--epochs", type=int, default=40, help="epochs per trial (40: about a minute on one core)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local cluster = trials at once")
    args = parser.parse_args(argv)
    ray = str(Path(sys.executable).with_name("ray"))
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port = free_port()
    subprocess.run([ray, "start", "--head", f"--port={port}", f"--num-cpus={args.cpus}", "--num-gpus=0",
                    "--include-dashboard=false", "--node-ip-address=127.0.0.1", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True)
    try:
        with tempfile.TemporaryDirectory() as storage:
            sets = ["name=orchestration_bench", f"samples={args.trials}", f"epochs={args.epochs}",
                    "models=[vit_c_tiny]", "optimizers={adamw: {lr: {log_uniform: [1.0e-3, 4.0e-3]}, weight_decay: 0.16}}",
                    "dataset.img_size=16"]
            argv = [sys.executable, "-m", "stability.sweep", "default", "--address", f"127.0.0.1:{port}",
                    "--storage", storage, *[x for s in sets for x in ("--set", s)]]
            start = time.perf_counter()
            subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            trials = pd.read_parquet(Path(storage) / "orchestration_bench" / "trials.parquet")
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    work = float(trials["wall_time_s"].sum())
    ideal = work / min(args.cpus, len(trials))
    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"{len(trials)} trials (vit_c_tiny, digits 16 px, {args.epochs} epochs), {args.cpus} at once; "
          f"mean trial {work / len(trials):.1f} s")
    print(f"{'way':52s} {'s':>8s}")
    print(f"{'trials own work / trials at once (ideal)':52s} {ideal:8.1f}")
    print(f"{'python -m stability.sweep --address (cluster up)':52s} {wall:8.1f}")
    print(f"ratio ideal / sweep: {ideal / wall:.3f}  orchestration share: {100 * (1 - ideal / wall):.1f}% (target <= 5%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
