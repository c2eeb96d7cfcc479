"""Running the missing trials of a plan with Ray Tune: teachers first, then the trials (alone or
in fused groups), each row stored by the driver's callback as its trial ends."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stability.results.storage import full_uri
from stability.spec import StudySpec
from stability.sweep.cluster import TRIAL_DRIVER_CPUS


def prepare_teachers(todo: list, root: Path, resources: dict[str, Any], store, study: str, console) -> tuple[dict, list]:
    """Train the teachers the remaining trials need; trials whose teacher failed are recorded as failed."""
    from stability.results.schema import failed_row
    from stability.sweep.teachers import ensure_teachers, teacher_key

    teachers, failures = ensure_teachers(todo, root, resources, console)
    runnable = []
    for cfg in todo:
        message = failures.get(teacher_key(cfg) or "")
        if message:
            store.write_trial(failed_row(study, cfg, message), [])
        else:
            runnable.append(cfg)
    return teachers, runnable


def fused_groups(todo: list, k: int, saved: list[list[str]] = (), say: Callable[[str], None] | None = None) -> list[list]:
    """Trials in groups of up to k that differ only in lr, weight decay and seed (resources.fused_trials);
    trials the fused engine cannot train (model or recipe) stay alone. `saved`: the groups (trial ids)
    of an earlier run of the study; one whose members are all still to run is kept as it was, so its
    checkpoint fits it, when it holds as a new group would (`saved.saved_fused_groups`); the others
    are dropped, said once to `say`."""
    if k == 1:
        return [[cfg] for cfg in todo]
    from stability.sweep.saved import dropped_groups_line, saved_fused_groups
    from stability.train.fused.rules import check_fusable_configs, shared_settings

    by_id = {cfg.trial_id: cfg for cfg in todo}
    groups, dropped = saved_fused_groups(saved, by_id, k)
    if dropped and say is not None:
        say(dropped_groups_line(dropped))
    todo = [cfg for cfg in todo if cfg.trial_id in by_id]
    by_key: dict[str, list] = {}
    for cfg in todo:
        by_key.setdefault(json.dumps(shared_settings(cfg), sort_keys=True), []).append(cfg)
    for members in by_key.values():
        try:
            check_fusable_configs(members[:1])
        except ValueError:
            groups += [[cfg] for cfg in members]
            continue
        groups += [members[i:i + k] for i in range(0, len(members), k)]
    return groups


TUNE_FOLDER_PREFIX = "stability-tune-"


def tune_folder() -> tempfile.TemporaryDirectory:
    """Tune's own experiment folder for one run (removed on every exit Python sees: the end, an error,
    Ctrl-C, SIGTERM), named after this process so that the next run removes one a kill -9 left."""
    from stability.results.lock import process_start

    remove_stale_tune_folders()
    pid = os.getpid()
    return tempfile.TemporaryDirectory(prefix=f"{TUNE_FOLDER_PREFIX}{pid}-{process_start(pid) or 0}-{_pid_space()}-",
                                       ignore_cleanup_errors=True)  # one left behind goes at the next start


def _pid_space() -> str:
    """This process's PID namespace as digits: a PID is checked only where it means the same process."""
    try:
        return "".join(c for c in os.readlink("/proc/self/ns/pid") if c.isdigit()) or "0"
    except OSError:
        return "0"


def remove_stale_tune_folders(parent: str | None = None) -> list[str]:
    """Remove the Tune folders in `parent` (default: the temporary folder) of sweeps that ended without
    removing them: their process is gone, or its PID is another process's now. Folders of live sweeps,
    and any this version did not name, are left alone. Returns the folders removed."""
    from stability.results.lock import process_start

    removed: list[str] = []
    if process_start(os.getpid()) is None:  # no /proc: whether a process lives cannot be told here
        return removed
    for folder in Path(parent or tempfile.gettempdir()).glob(f"{TUNE_FOLDER_PREFIX}*-*-*-*"):
        pid, start, space = folder.name[len(TUNE_FOLDER_PREFIX):].split("-")[:3]
        if not (pid.isdigit() and start.replace(".", "", 1).isdigit()) or space != _pid_space() or folder.is_symlink() \
                or not folder.is_dir():
            continue
        if process_start(int(pid)) != start:  # None: the process is gone
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


def run_trials(spec: StudySpec, resources: dict[str, Any], todo: list, store, progress, verbose: bool,
               teachers: dict[str, bytes], on_changed: Callable[[], None] | None = None, mlflow: str | None = None) -> None:
    """The trials under Ray Tune; `on_changed` (the live report) hears of each stored row; with `mlflow`
    (a tracking URI) the driver logs each trial as an MLflow run (stability.sweep.tracking)."""
    from ray import tune

    from stability.sweep.callbacks import ProgressCallback, StoreCallback
    from stability.sweep.tune_trial import run_in_tune

    from stability.sweep.saved import check_checkpoints
    from stability.sweep.secrets import keep_credentials_out_of_runtime_env, trial_environment

    groups = fused_groups(todo, spec.resources.fused_trials, store.read_groups(), progress.console.print)
    store.write_groups([[cfg.trial_id for cfg in group] for group in groups if len(group) > 1])
    if spec.resources.checkpoint_every != 0:
        check_checkpoints(store.checkpoints_dir, groups, progress.console.print)
    if len(groups) < len(todo):
        alone = sum(len(group) == 1 for group in groups)
        progress.console.print(f"fused trials: {len(todo)} trials in {len(groups)} processes"
                               + (f" ({alone} alone: model or recipe the fused engine cannot train)" if alone else ""))
    # the configs travel as objects (one copy in Ray's object store); a Tune trial is told its group's index
    # so is the checkpoints' URI: it may carry credentials, and Tune writes the trials' configs to disk
    # and the driver's AWS variables, which Tune would copy into a runtime environment that Ray logs
    keep_credentials_out_of_runtime_env()
    run_in_tune = tune.with_parameters(run_in_tune, groups=groups, teachers=teachers,
                                       checkpoints_root=full_uri(store.checkpoints_dir), environment=trial_environment())
    if resources["workers_per_trial"] == 1:
        trainable = tune.with_resources(run_in_tune, {"cpu": resources["cpus_per_worker"], "gpu": resources["gpus_per_worker"]})
    else:  # the trial process only drives a TorchTrainer; its workers hold the resources
        trainable = tune.with_resources(run_in_tune, {"cpu": TRIAL_DRIVER_CPUS})
    tracker = None
    if mlflow:
        from stability.sweep.tracking import LiveTracker

        tracker = LiveTracker(mlflow, spec.name, lambda text: progress.console.print(text, markup=False, highlight=False))
        tracker.start()
    stored = StoreCallback(spec.name, store, groups, progress.finished, on_changed, tracker)
    with tune_folder() as tune_dir:
        param_space = {
            "group": tune.grid_search([{"index": i, "size": len(group)} for i, group in enumerate(groups)]),
            "resources": resources,
            "train_storage": tune_dir,
            "checkpoints": {"every": spec.resources.checkpoint_every},
        }
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(max_concurrent_trials=spec.resources.max_concurrent, reuse_actors=True),
            run_config=tune.RunConfig(
                name=spec.name, storage_path=tune_dir, verbose=1 if verbose else 0,
                callbacks=[stored, ProgressCallback(progress)],
                failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            ),
        )
        try:
            tuner.fit()
        finally:
            with contextlib.suppress(OSError):  # advisory; never in the way of the run's own outcome
                stored.stopped()
            if tracker is not None:
                tracker.close(store.root, all(cfg.trial_id in stored.written for cfg in todo))
