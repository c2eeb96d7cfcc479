"""A study's lifecycle below the command line: which spec runs (a new study, `--resume` of the
saved one, `--add-samples` extending it, a different spec refused), the study lock's lifetime, the
dry run, and the run itself (the remaining checks, the missing trials, the summary).

`python -m stability.sweep` (`__main__`) parses the command line and calls `dry_run` or
`locked_sweep`; `stability.api.run_study` calls the same code.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
from pathlib import Path

from stability.cli import UsageError
from stability.spec import SpecError, StudySpec, load_spec, parse_spec
from stability.sweep.checks import check_address, check_data, check_factors, check_names, check_storage
from stability.sweep.commands import resume_command
from stability.sweep.figures import dry_run_estimate
from stability.sweep.live_report import live_report
from stability.sweep.signals import StopSignals


def extended(saved_spec: StudySpec | None, saved: dict, saved_path, add: int) -> StudySpec:
    """The saved study with `add` more points per optimizer: Sobol and random draws continue their
    sequence, so its first points, and the trials on them, are those of the saved study."""
    import yaml

    if saved_spec is None:
        raise UsageError(f"--add-samples: {saved_path} holds a spec this version cannot read; extend it with the "
                         f"version that wrote it")
    if saved_spec.sampler == "grid":
        raise UsageError("--add-samples: a grid study does not extend (a finer grid is another lattice); plan a new "
                         "study with --set samples=... --set name=...")
    return parse_spec(yaml.safe_dump(saved), str(saved_path), [f"samples={saved_spec.samples + add}"])


def resolve_spec(args: argparse.Namespace, spec: StudySpec | None = None) -> StudySpec:
    """The study to run (`spec`: the one loaded from STUDY and --set); with --resume, the spec saved
    beside its results wins. A damaged saved study.yaml is a StoreError (one line)."""
    import yaml

    from stability.results.store import ResultsStore, StoreError
    from stability.sweep.saved import first_key_difference

    spec = spec or load_spec(args.study, args.assignments)
    store = ResultsStore(storage_root(args.storage) / spec.name)
    saved_path = store.spec_path
    try:
        record = store.read_spec()
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    if record is not None:
        saved = record["spec"]
        try:  # compared as this version reads it: keys added since (with defaults) are no difference
            saved_spec = parse_spec(yaml.safe_dump(saved), str(saved_path))
        except SpecError:
            saved_spec = None
        if args.add_samples:
            return extended(saved_spec, saved, saved_path, args.add_samples)
        if (saved_spec.resolved() if saved_spec is not None else saved) != spec.resolved():
            if not args.resume:
                raise UsageError(f"{saved_path.parent} holds results of a different spec named {spec.name!r}; "
                                 f"use --resume to finish it, another --set name=..., or another --storage")
            given = spec.resolved()
            spec = saved_spec or parse_spec(yaml.safe_dump(saved), str(saved_path))
            # said once the stored results are known to be this plan's (`run`), or by the dry run
            args.resume_note = (f"--resume: running the plan saved in {saved_path} (it differs from "
                                f"{args.study or 'default'}{' with --set' if args.assignments else ''} in "
                                f"{first_key_difference(spec.resolved(), given)})")
    elif args.resume or args.add_samples:
        verb = "resume" if args.resume else "extend"
        raise UsageError(f"nothing to {verb}: {saved_path} does not exist")
    return spec


def storage_root(storage: str):
    """--storage as a location: a local Path, or an ObjectPath for a pyarrow.fs URI (UsageError in one
    line when pyarrow cannot resolve it)."""
    from stability.results.storage import location

    try:
        return location(storage)
    except (OSError, ValueError, NotImplementedError) as exc:  # unknown scheme, bad query, unreachable store
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"--storage {shown_storage(storage)}: {first}; give a folder or a URI such as "
                         f"s3://bucket/runs") from None


def shown_storage(storage: str) -> str:
    """--storage as messages and the resume command show it: a URI without its credentials."""
    from stability.results.storage import public_uri

    return public_uri(storage)


def _absent_folders(root) -> list[Path]:
    """`root` and those of its parents that do not exist yet, deepest first (none on an object store)."""
    if not isinstance(root, Path):
        return []
    absent = []
    for folder in [root.absolute(), *root.absolute().parents]:
        if folder.exists():
            break
        absent.append(folder)
    return absent


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a refused or empty run created (deepest first); any holding a file stays."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def locked_sweep(args: argparse.Namespace, spec: StudySpec, console) -> int:
    """A run (not a dry run) of the study: the study lock taken before study.yaml is compared or
    written, held until the end; SIGINT and SIGTERM take one path (finished trials kept, the resume
    command printed, exit 130 or 143); folders this run created are removed when left empty."""
    from stability.results.lock import LockHeld, describe, study_lock

    root = storage_root(args.storage) / spec.name
    check_storage(root)
    created = _absent_folders(root)
    stop = StopSignals()

    def lost(holder) -> None:  # the renewal thread found the lock taken over: this sweep stops
        console.print(f"error: the lock of {root} was taken over by another sweep ({describe(holder)}); stopping")
        import _thread

        _thread.interrupt_main(signal.SIGTERM)

    lock = study_lock(root, on_lost=lost)
    stop.install()
    try:
        try:
            lock.acquire()
        except LockHeld as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"--storage: cannot lock {root}: {exc.strerror or exc}") from None
        if lock.took_over:
            console.print(f"taking over the study lock of a sweep that ended without releasing it ({lock.took_over})")
        spec = resolve_spec(args, spec)
        return run(args, spec, root, console, stop)
    except KeyboardInterrupt:
        stop.signum = stop.signum or signal.SIGINT
        if lock.token is not None and (root / "study.yaml").is_file():
            console.print(f"interrupted; finished trials are kept. Resume with:\n  {resume_command(args, spec.name)}")
        else:
            console.print("interrupted before any trial ran; nothing was written.")
        return stop.exit_code()
    finally:
        lock.release()
        stop.restore()
        _remove_if_empty(created)


def dry_run(spec: StudySpec, add_samples: int | None = None, args: argparse.Namespace | None = None) -> int:
    """Validate and print the plan as JSON; a missing dataset is a warning (the data may come later).
    With --add-samples, `added` counts the trials the extension adds; `estimate`: stability.sweep.figures."""
    from stability.sampling import plan_summary, plan_trials

    check_names(spec)
    plan = plan_trials(spec)
    check_factors(plan, spec.resources.workers_per_trial)
    summary = plan_summary(spec, plan)
    if add_samples:
        before = {cfg.trial_id for cfg in plan_trials(spec.model_copy(update={"samples": spec.samples - add_samples}))}
        summary["added"] = {"samples": [spec.samples - add_samples, spec.samples],
                            "trials": sum(cfg.trial_id not in before for cfg in plan)}
    try:
        check_data(spec)
    except SpecError as exc:
        summary["warnings"] = [str(exc)]
    if args is not None:  # read-only unless --calibrate (and the data is there to calibrate on)
        summary["estimate"] = dry_run_estimate(spec, plan, storage_root(args.storage), args,
                                               calibrate=args.calibrate and "warnings" not in summary)
    print(json.dumps(summary))
    return 0


def run(args: argparse.Namespace, spec: StudySpec, root, console, stop: StopSignals) -> int:
    """Under the study lock: the remaining checks, then the trials the store does not hold yet."""
    from stability.results.schema import extra_column_type
    from stability.results.store import ResultsStore, StoreError, read_study
    from stability.sampling import plan_trials
    from stability.sweep.saved import check_results_match_plan

    check_names(spec)
    plan = plan_trials(spec)
    check_factors(plan, spec.resources.workers_per_trial)
    check_data(spec)
    if args.address:
        check_address(args.address)

    extra_values: dict[str, list] = {}
    for cfg in plan:
        for key, value in cfg.extras.items():
            extra_values.setdefault(key, []).append(value)
    store = ResultsStore(root, {k: extra_column_type(v) for k, v in extra_values.items()})
    try:
        store.check_layout()
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    done = store.finished_ids({cfg.trial_id for cfg in plan})
    todo = [cfg for cfg in plan if cfg.trial_id not in done]
    note = getattr(args, "resume_note", None)
    check_results_match_plan(done, plan, lambda: read_study(root).trials, store.spec_path,  # an edited study.yaml
                             note and note[note.index("(") + 1:-1])
    if note:
        console.print(note, markup=False, highlight=False)
    finished_before = len(plan) - len(todo)
    report_cmd = f"python -m stability.report {shlex.quote(str(root))}"
    with live_report(root, args.report, args.report_every, console, store.finished_ids) as live:
        if not todo:
            console.print(f"study {spec.name}: all {len(plan)} trials already finished in {root}; nothing to run.")
        else:
            if finished_before:
                console.print(f"study {spec.name}: {finished_before} of {len(plan)} trials already finished; running {len(todo)}.")
            else:
                console.print(f"study {spec.name}: running {len(plan)} trials -> {root}")
            from stability.sweep.cluster import connect_ray, placement, versions
            from stability.sweep.run import prepare_teachers, run_trials

            with stop.deferred():
                connect_ray(args.address, args.num_cpus, args.verbose)
            resources = placement(spec)
            store.write_spec(spec, versions())
            teachers, todo = prepare_teachers(todo, root, resources, store, spec.name, console)
            from stability.sweep.figures import estimate_line, safe_run_estimate
            from stability.sweep.progress import SweepProgress

            estimate = safe_run_estimate(spec, todo, resources, storage_root(args.storage), root, args.address,
                                         store.read_groups(), calibrate=args.calibrate)
            console.print(estimate_line(estimate))
            with (SweepProgress(total=len(plan), already_done=len(plan) - len(todo), console=console,
                                estimate=estimate) as progress,
                  stop.tune()):
                run_trials(spec, resources, todo, store, progress, args.verbose, teachers, live and live.changed,
                           args.mlflow)

    from stability.sweep.progress import print_summary

    finished = store.finished_ids()
    missing = sum(cfg.trial_id not in finished for cfg in plan)
    if finished:
        result = read_study(root)
        trials = result.trials
        planned = trials[trials["trial_id"].isin({cfg.trial_id for cfg in plan})]
        print_summary(planned, console)
        failed = int((planned["status"] == "failed").sum())
        if failed:
            console.print(f"{failed} trial(s) failed after retries; their messages are in the `error` column.")
    if missing:
        console.print(f"{missing} trial(s) did not finish. Resume with:\n  {resume_command(args, spec.name)}")
        return stop.exit_code()
    console.print(f"report: {root / 'report.html' if live and live.written else report_cmd}")
    return 0
