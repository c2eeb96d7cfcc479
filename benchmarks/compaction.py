"""Reading a large study before and after `python -m stability.results compact`, side by side.

    python -m benchmarks.compaction [--trials 10000] [--epochs 10] [--no-s3]

Writes a synthetic study of N trials as the sweep writes it (one trials file and one curves file
per trial, through `ResultsStore.write_trial`), then times, on a local folder and on an S3 server
on localhost (moto's server mode, started and stopped here; `--no-s3` skips it): what a report
reads (`read_study`), what a resumed sweep reads (`ResultsStore.finished_ids`), the compaction
itself, and both reads again. Prints one ratio line per store (before / after).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stability.results.compact import compact
from stability.results.storage import location
from stability.results.store import ResultsStore, read_study
from stability.results.tables import table_files

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def _trial(i: int, epochs: int) -> tuple[dict, list[dict]]:
    err = 10.0 + 30.0 * ((i * 0.618) % 1.0)
    row = {"study": "bench", "trial_id": f"{i:012x}", "model": ("vit_p_tiny", "vit_c_tiny")[i % 2],
           "optimizer": ("adamw", "sgd")[(i // 2) % 2], "lr": 1e-3 * (1 + i % 7), "weight_decay": 0.05, "epochs": epochs,
           "seed": i, "batch_size": 128, "point": i // 4, "repeat": 0, "status": "ok", "top1_err": err,
           "best_top1_err": err, "train_loss": 0.5, "wall_time_s": 60.0, "images_per_s": 900.0, "params": 500_000,
           "gflops": 0.01, "patch_cos_sim": 0.3, "patch_cos_sim_layers": [0.1, 0.2, 0.3]}
    curve = [{"epoch": e, "train_loss": 2.0 * math.exp(-e / 5), "top1_err": err + 50 * math.exp(-e), "lr": 1e-3,
              "elapsed_s": 6.0 * e} for e in range(1, epochs + 1)]
    return row, curve


def write_study(root, trials: int, epochs: int, threads: int) -> None:
    store = ResultsStore(location(root))
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: store.write_trial(*_trial(i, epochs)), range(trials)))


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def measure(root, trials: int) -> dict[str, float]:
    """Seconds to read the study and its finished set, before and after compaction, and to compact it."""
    location_ = location(root)
    store = ResultsStore(location_)
    out = {"files_before": len(table_files(store.trials_dir)) + len(table_files(store.curves_dir))}
    result, out["read_before"] = _timed(lambda: read_study(location_))
    done, out["finished_before"] = _timed(store.finished_ids)
    assert len(result.trials) == trials and len(done) == trials
    _, out["compact"] = _timed(lambda: compact(location_, say=lambda line: None))
    out["files_after"] = len(table_files(store.trials_dir)) + len(table_files(store.curves_dir))
    result, out["read_after"] = _timed(lambda: read_study(location_))
    done, out["finished_after"] = _timed(store.finished_ids)
    assert len(result.trials) == trials and len(done) == trials
    return out


@contextlib.contextmanager
def s3_server():
    """A moto S3 server on a free localhost port with one bucket; yields the base URI."""
    import pyarrow.fs as pafs

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(CREDENTIALS)
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto S3 server did not start") from None
                time.sleep(0.2)
        pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                          allow_bucket_creation=True).create_dir("bench")
        yield f"s3://bench/{uuid.uuid4().hex}/study?endpoint_override=127.0.0.1:{port}&scheme=http"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def show(name: str, m: dict[str, float]) -> None:
    print(f"{name}: {m['files_before']:.0f} files -> {m['files_after']:.0f}; compaction {m['compact']:.2f} s")
    print(f"  read_study     before {m['read_before']:8.2f} s   after {m['read_after']:8.3f} s")
    print(f"  finished_ids   before {m['finished_before']:8.2f} s   after {m['finished_after']:8.3f} s")
    print(f"ratio {name} read_study before/after: {m['read_before'] / m['read_after']:.1f}x; "
          f"finished_ids before/after: {m['finished_before'] / m['finished_after']:.1f}x", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compaction", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=10_000, help="trials of the synthetic study (default 10000)")
    p.add_argument("--epochs", type=int, default=10, help="curve rows per trial (default 10)")
    p.add_argument("--threads", type=int, default=8, help="writer threads while building the study (default 8)")
    p.add_argument("--s3", action=argparse.BooleanOptionalAction, default=True,
                   help="also on an S3 server on localhost (needs moto[server]; default on)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-compaction-") as tmp:
        root = Path(tmp) / "study"
        _, took = _timed(lambda: write_study(root, args.trials, args.epochs, args.threads))
        print(f"local: wrote {args.trials} trials x {args.epochs} epochs in {took:.1f} s", flush=True)
        show("local", measure(root, args.trials))
    if args.s3:
        with s3_server() as uri:
            _, took = _timed(lambda: write_study(uri, args.trials, args.epochs, args.threads))
            print(f"s3 (moto on localhost): wrote {args.trials} trials in {took:.1f} s", flush=True)
            show("s3", measure(uri, args.trials))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
