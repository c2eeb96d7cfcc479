"""`python -m stability.sweep [STUDY]`: run a stability study on Ray (DESIGN.md, "Commands").

Validates everything first (exit 2, one line, nothing written, Ray not started), then runs
the trials the store does not hold yet with Ray Tune, writing each trial's row as it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from stability.cli import UsageError, fail
from stability.spec import (SpecError, StudySpec, builtin_description, builtin_names, check_data, check_names, load_spec,
                            parse_spec, spec_reference)

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
    spec = load_spec(args.study, args.assignments)
    saved_path = Path(args.storage) / spec.name / "study.yaml"
    if saved_path.is_file():
        import yaml

        saved = (yaml.safe_load(saved_path.read_text()) or {}).get("spec")
        if saved is not None and saved != spec.resolved():
            if not args.resume:
                raise UsageError(f"{saved_path.parent} holds results of a different spec named {spec.name!r}; "
                                 f"use --resume to finish it, another --set name=..., or another --storage")
            spec = parse_spec(yaml.safe_dump(saved), str(saved_path))
    elif args.resume:
        raise UsageError(f"nothing to resume: {saved_path} does not exist")
    return spec


def check_storage(root: Path) -> None:
    """Fail before any work if the study folder cannot be written (a real probe: root passes
    permission checks that the file system still refuses)."""
    parent = root.absolute()
    while not parent.exists():
        parent = parent.parent
    try:
        if not parent.is_dir():
            raise NotADirectoryError(f"{parent} is not a folder")
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise UsageError(f"--storage: cannot write to {parent} (needed for {root}): "
                         f"{exc.strerror or exc}; choose a writable folder") from None


def check_address(address: str) -> None:
    """A host:port address must answer within seconds (Ray itself would wait for minutes)."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address!r}: expected host:port (e.g. 127.0.0.1:6379) or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        raise UsageError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); "
                         f"start one with `ray start --head` or omit --address to run locally") from None


def versions() -> dict[str, str]:
    """Versions of the packages that shape results, read from their metadata (importing torch costs seconds)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import stability

    found = {"stability": stability.__version__, "python": platform.python_version()}
    for package in ("torch", "timm", "ray", "pyarrow"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def connect_ray(address: str | None, num_cpus: int | None, verbose: bool) -> None:
    import logging

    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # results go to our own store; Tune's default CSV/JSON/TensorBoard loggers would only duplicate
    # them per trial, and the TensorBoard one imports torch into the driver (seconds per sweep)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if not verbose:  # Tune's legacy reporter honours verbose=0; keep trial tracebacks out of the live line
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
        logging.getLogger("ray.train").setLevel(logging.CRITICAL)
    common: dict[str, Any] = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR}
    try:
        if address:
            ray.init(address=address, **common)
        else:  # a private local instance, reachable from this machine only
            ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", **common)
    except ConnectionError as exc:
        raise UsageError(f"--address {address}: cannot connect to Ray ({str(exc).splitlines()[0]}); "
                         "start a cluster with `ray start --head` or omit --address") from None


TRIAL_DRIVER_CPUS = 0.01  # a data-parallel trial's own process only drives its TorchTrainer


def placement(spec: StudySpec) -> dict[str, Any]:
    """Resources per trial, with GPUs decided by what the cluster has; refuses a trial that
    could never be placed (Ray would wait for it forever)."""
    import ray

    res = spec.resources
    cluster = ray.cluster_resources()
    gpus = res.gpus_per_worker
    if gpus is None:
        gpus = 1.0 / res.trials_per_gpu if cluster.get("GPU", 0) > 0 else 0.0
    cpus_needed = res.workers_per_trial * res.cpus_per_worker + (TRIAL_DRIVER_CPUS if res.workers_per_trial > 1 else 0)
    gpus_needed = res.workers_per_trial * gpus
    if cpus_needed > cluster.get("CPU", 0) or gpus_needed > cluster.get("GPU", 0):
        raise UsageError(f"resources: one trial needs {cpus_needed:g} CPUs and {gpus_needed:g} GPUs but the cluster has "
                         f"{cluster.get('CPU', 0):g} CPUs and {cluster.get('GPU', 0):g} GPUs; lower "
                         f"resources.workers_per_trial / cpus_per_worker / gpus_per_worker")
    return {"workers_per_trial": res.workers_per_trial, "cpus_per_worker": res.cpus_per_worker, "gpus_per_worker": gpus}


def prepare_teachers(todo: list, root: Path, resources: dict[str, Any], store, study: str, console) -> tuple[dict, list]:
    """Train the teachers the remaining trials need; trials whose teacher failed are recorded as failed."""
    from stability.teachers import ensure_teachers, teacher_key
    from stability.tune_trial import failed_row

    teachers, failures = ensure_teachers(todo, root, resources, console)
    runnable = []
    for cfg in todo:
        message = failures.get(teacher_key(cfg) or "")
        if message:
            store.write_trial(failed_row(study, cfg, message), [])
        else:
            runnable.append(cfg)
    return teachers, runnable


def fused_groups(todo: list, k: int) -> list[list]:
    """Trials in groups of up to k that differ only in lr, weight decay and seed (resources.fused_trials);
    trials the fused engine cannot train (model or recipe) stay alone."""
    if k == 1:
        return [[cfg] for cfg in todo]
    from stability.fused.rules import check_fusable_configs, shared_settings

    by_key: dict[str, list] = {}
    for cfg in todo:
        by_key.setdefault(json.dumps(shared_settings(cfg), sort_keys=True), []).append(cfg)
    groups = []
    for members in by_key.values():
        try:
            check_fusable_configs(members[:1])
        except ValueError:
            groups += [[cfg] for cfg in members]
            continue
        groups += [members[i:i + k] for i in range(0, len(members), k)]
    return groups


def run_trials(spec: StudySpec, resources: dict[str, Any], todo: list, store, progress, verbose: bool,
               teachers: dict[str, bytes]) -> None:
    from ray import tune

    from stability.tune_trial import StoreCallback, run_in_tune

    run_in_tune = tune.with_parameters(run_in_tune, teachers=teachers)

    if resources["workers_per_trial"] == 1:
        trainable = tune.with_resources(run_in_tune, {"cpu": resources["cpus_per_worker"], "gpu": resources["gpus_per_worker"]})
    else:  # the trial process only drives a TorchTrainer; its workers hold the resources
        trainable = tune.with_resources(run_in_tune, {"cpu": TRIAL_DRIVER_CPUS})
    with tempfile.TemporaryDirectory(prefix="stability-tune-") as tune_dir:
        groups = fused_groups(todo, spec.resources.fused_trials)
        if len(groups) < len(todo):
            alone = sum(len(group) == 1 for group in groups)
            progress.console.print(f"fused trials: {len(todo)} trials in {len(groups)} processes"
                                   + (f" ({alone} alone: model or recipe the fused engine cannot train)" if alone else ""))
        param_space = {
            "trials": tune.grid_search([[cfg.model_dump(mode="json") for cfg in group] for group in groups]),
            "resources": resources,
            "train_storage": tune_dir,
        }
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(max_concurrent_trials=spec.resources.max_concurrent, reuse_actors=True),
            run_config=tune.RunConfig(
                name=spec.name, storage_path=tune_dir, verbose=1 if verbose else 0,
                callbacks=[StoreCallback(spec.name, store, progress.finished), progress],
                failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            ),
        )
        tuner.fit()


def sweep(argv: list[str] | None = None) -> int:
    """Validate, plan, run what is missing, summarise. Returns the exit code."""
    from rich.console import Console

    from stability.sampling import plan_summary, plan_trials
    from stability.store import ResultsStore, extra_column_type, read_study
    from stability.teachers import check_factors

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
        connect_ray(args.address, args.num_cpus, args.verbose)
        resources = placement(spec)
        store.write_spec({"schema_version": 1, "spec": spec.resolved(), "versions": versions()})
        teachers, todo = prepare_teachers(todo, root, resources, store, spec.name, console)
        from stability.progress import SweepProgress

        with SweepProgress(total=len(plan), already_done=len(plan) - len(todo), console=console) as progress:
            run_trials(spec, resources, todo, store, progress, args.verbose, teachers)

    from stability.progress import print_summary

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
