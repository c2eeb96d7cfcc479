"""`python -m stability.sweep [STUDY]`: run a stability study on Ray (docs/architecture.md, "Commands and exit codes").

The command line only: its options, and which of the study's lifecycle steps runs
(`stability.sweep.lifecycle`: the spec resolved for --resume and --add-samples, the lock, the dry
run, the run). Validates everything first (exit 2, one line, nothing written, Ray not started),
then runs the trials the store does not hold yet with Ray Tune, writing each trial's row as it ends.

One writer per study folder: a run (not `--dry-run`) takes the folder's lock
(`stability.results.lock`) before it compares or writes `study.yaml`, and holds it until it
exits; a second run is refused (exit 2). SIGINT and SIGTERM take one path: the trials stop,
finished ones are kept, the resume command is printed, and the exit code is 130 or 143.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from stability.cli import UsageError, fail, positive_int
from stability.spec import (
    SpecError,
    builtin_description,
    builtin_names,
    load_spec,
    spec_reference,
)
from stability.sweep.checks import check_storage
from stability.sweep.errors import storage_errors
from stability.sweep.figures import cluster_size
from stability.sweep.lifecycle import dry_run, locked_sweep, resolve_spec, shown_storage, storage_root
from stability.sweep.live_report import DEFAULT_EVERY_S, report_path
from stability.sweep.signals import EXIT_INTERRUPTED
from stability.tracking import check_mlflow


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m stability.sweep",
        description="Run a hyper-parameter stability study: sample lr/wd/optimizer (and any other knob) "
        "for each model, train every sample on Ray, store the results as Parquet.",
        epilog="examples:\n  python -m stability.sweep                      # the default study (digits, CPU)\n"
        "  python -m stability.sweep --list\n  python -m stability.sweep my_study.yaml --address auto --storage /shared/runs\n"
        "  python -m stability.sweep default --set samples=16 --set epochs=[5,10]\n"
        "  python -m stability.sweep default --resume      # finish an interrupted study",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("study", nargs="?", default=None, help="a study YAML file or the name of a built-in study (default: default)")
    p.add_argument("--address", default=None, help="Ray cluster to join (host:port or 'auto'); default: start a local one")
    p.add_argument("--storage", default="runs", help="results folder or pyarrow.fs URI (e.g. s3://bucket/runs, a custom endpoint in its query: "
                   "?endpoint_override=host:port); the study writes <storage>/<name>/ (default: ./runs)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted study from its saved study.yaml")
    p.add_argument("--add-samples", type=positive_int, default=None, metavar="N",
                   help="extend a study by N more points per optimizer: the sequence continues, finished trials keep "
                        "their ids and results, only the new trials run (not for grid studies)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, dotted (e.g. samples=16, train.mixup=0.8); repeatable")
    p.add_argument("--dry-run", action="store_true", help="validate and print the trial plan as JSON; start nothing")
    p.add_argument("--cluster", type=cluster_size, default=None, metavar="CPUS,GPUS",
                   help="with --dry-run: the cluster the estimate assumes (default: this machine)")
    p.add_argument("--calibrate", action="store_true", help="time a few training steps of each shape no figure "
                   "covers first (a dry run: on this machine), cached in <storage>/.calibration/; a run on a cluster "
                   "with GPUs does so by itself")
    p.add_argument("--report", action="store_true", help="rewrite <study>/report.html as trials finish, and once at the end")
    p.add_argument("--report-every", type=_seconds, default=DEFAULT_EVERY_S, metavar="SECONDS",
                   help="with --report: at most one report per SECONDS (default: %(default)g)")
    p.add_argument("--mlflow", default=None, metavar="URI", help="log each trial as an MLflow run under one run of "
                   "the study, from the driver as trials report (a tracking URI: sqlite:///mlflow.db, http://host:5000; "
                   "pip install \"stability[mlflow]\")")
    p.add_argument("--list", action="store_true", help="list the built-in studies and exit")
    p.add_argument("--help-spec", action="store_true", help="list every study-spec key with its default and meaning")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")
    p.add_argument("--verbose", action="store_true", help="show Ray's own logs and tables")
    return p.parse_args(argv)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def sweep(argv: list[str] | None = None) -> int:
    """Validate, plan, run what is missing, summarise. Returns the exit code."""
    from rich.console import Console

    args = parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)
    if args.help_spec:
        print("\n".join(spec_reference()))
        return 0
    if args.list:
        for name in builtin_names():
            print(f"{name:28s} {builtin_description(name)}")
        return 0
    if args.mlflow is not None:  # before any work: MLflow is an optional extra
        check_mlflow("--mlflow", args.mlflow)
    spec = load_spec(args.study, args.assignments)
    if args.dry_run:  # takes no lock and writes nothing
        if isinstance(storage_root(args.storage), Path):  # refused as a run would be (a probe file, removed at once)
            check_storage(storage_root(args.storage) / spec.name)
        resolved = resolve_spec(args, spec)
        if getattr(args, "resume_note", None):
            print(args.resume_note, file=sys.stderr)
        code = dry_run(resolved, args.add_samples, args)
        if args.report:
            print(f"--report: a run would rewrite {report_path(shown_storage(args.storage), spec.name)} as trials "
                  f"finish", file=sys.stderr)
        return code
    return locked_sweep(args, spec, console)


EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # as a process ended by SIGPIPE, what `cmd | head` expects


def main(argv: list[str] | None = None) -> int:
    try:
        with storage_errors(argv):
            code = sweep(argv)
        sys.stdout.flush()  # here, where a reader that left is caught, not at the interpreter's exit
        return code
    except (UsageError, SpecError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # before the study lock was taken: nothing was written
        print("interrupted; nothing was written.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout left (`--dry-run | head`): nothing more to say, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not fail again
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    raise SystemExit(main())
