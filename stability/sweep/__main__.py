"""`python -m stability.sweep [STUDY]`: run a stability study on Ray (DESIGN.md, "Commands").

Validates everything first (exit 2, one line, nothing written, Ray not started), then runs
the trials the store does not hold yet with Ray Tune, writing each trial's row as it ends.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from stability.cli import UsageError, fail
from stability.spec import (
    SpecError,
    StudySpec,
    builtin_description,
    builtin_names,
    load_spec,
    parse_spec,
    spec_reference,
)
from stability.sweep.checks import (
    check_address,
    check_data,
    check_factors,
    check_names,
    check_storage,
)

EXIT_INTERRUPTED = 130


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
    p.add_argument("--storage", default="runs", help="results folder; the study writes <storage>/<name>/ (default: ./runs)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted study from its saved study.yaml")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, dotted (e.g. samples=16, train.mixup=0.8); repeatable")
    p.add_argument("--dry-run", action="store_true", help="validate and print the trial plan as JSON; start nothing")
    p.add_argument("--list", action="store_true", help="list the built-in studies and exit")
    p.add_argument("--help-spec", action="store_true", help="list every study-spec key with its default and meaning")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")
    p.add_argument("--verbose", action="store_true", help="show Ray's own logs and tables")
    return p.parse_args(argv)


def resolve_spec(args: argparse.Namespace) -> StudySpec:
    """The study to run; with --resume, the spec saved beside its results wins."""
    import yaml

    from stability.results.store import ResultsStore

    spec = load_spec(args.study, args.assignments)
    store = ResultsStore(Path(args.storage) / spec.name)
    saved_path = store.spec_path
    if saved_path.is_file():
        saved = (store.read_spec() or {}).get("spec")
        if saved is not None and saved != spec.resolved():
            if not args.resume:
                raise UsageError(f"{saved_path.parent} holds results of a different spec named {spec.name!r}; "
                                 f"use --resume to finish it, another --set name=..., or another --storage")
            spec = parse_spec(yaml.safe_dump(saved), str(saved_path))
    elif args.resume:
        raise UsageError(f"nothing to resume: {saved_path} does not exist")
    return spec




def sweep(argv: list[str] | None = None) -> int:
    """Validate, plan, run what is missing, summarise. Returns the exit code."""
    from rich.console import Console

    from stability.results.schema import extra_column_type
    from stability.results.store import ResultsStore, read_study
    from stability.sampling import plan_summary, plan_trials

    args = parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)
    if args.help_spec:
        print("\n".join(spec_reference()))
        return 0
    if args.list:
        for name in builtin_names():
            print(f"{name:28s} {builtin_description(name)}")
        return 0
    spec = resolve_spec(args)
    check_names(spec)
    plan = plan_trials(spec)
    check_factors(plan)
    if args.dry_run:  # a plan can be inspected before the data is in place
        summary = plan_summary(spec, plan)
        try:
            check_data(spec)
        except SpecError as exc:
            summary["warnings"] = [str(exc)]
        print(json.dumps(summary))
        return 0
    check_data(spec)
    root = Path(args.storage) / spec.name
    check_storage(root)
    if args.address:
        check_address(args.address)

    extra_values: dict[str, list] = {}
    for cfg in plan:
        for key, value in cfg.extras.items():
            extra_values.setdefault(key, []).append(value)
    store = ResultsStore(root, {k: extra_column_type(v) for k, v in extra_values.items()})
    done = store.finished_ids()
    todo = [cfg for cfg in plan if cfg.trial_id not in done]
    finished_before = len(plan) - len(todo)
    report_cmd = f"python -m stability.report {shlex.quote(str(root))}"
    if not todo:
        console.print(f"study {spec.name}: all {len(plan)} trials already finished in {root}; nothing to run.")
    else:
        if finished_before:
            console.print(f"study {spec.name}: {finished_before} of {len(plan)} trials already finished; running {len(todo)}.")
        else:
            console.print(f"study {spec.name}: running {len(plan)} trials -> {root}")
        from stability.sweep.cluster import connect_ray, placement, versions
        from stability.sweep.run import prepare_teachers, run_trials

        connect_ray(args.address, args.num_cpus, args.verbose)
        resources = placement(spec)
        store.write_spec(spec, versions())
        teachers, todo = prepare_teachers(todo, root, resources, store, spec.name, console)
        from stability.sweep.progress import SweepProgress

        with SweepProgress(total=len(plan), already_done=len(plan) - len(todo), console=console) as progress:
            run_trials(spec, resources, todo, store, progress, args.verbose, teachers)

    from stability.sweep.progress import print_summary

    finished = store.finished_ids()
    missing = sum(cfg.trial_id not in finished for cfg in plan)
    if finished:
        trials = read_study(root).trials
        planned = trials[trials["trial_id"].isin({cfg.trial_id for cfg in plan})]
        print_summary(planned, console)
        failed = int((planned["status"] == "failed").sum())
        if failed:
            console.print(f"{failed} trial(s) failed after retries; their messages are in the `error` column.")
    if missing:
        resume = " ".join(["python -m stability.sweep", shlex.quote(args.study or spec.name), "--storage",
                           shlex.quote(args.storage), "--resume"])
        console.print(f"{missing} trial(s) did not finish. Resume with:\n  {resume}")
        return EXIT_INTERRUPTED
    console.print(f"report: {report_cmd}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return sweep(argv)
    except (UsageError, SpecError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted; finished trials are kept. Resume with --resume.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
