"""One study's runs in an MLflow tracking store: the experiment named after the study, its parent
run (tag `stability.kind` = study) and one child run per trial (tag `trial_id`), found again by
those tags, so a second writer adds no run. Only this module and its callers import MLflow."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

KIND = "stability.kind"  # "study" (the parent run) or "trial" (a child run)
PARENT = "mlflow.parentRunId"
EPOCH_METRICS = ("train_loss", "top1_err", "lr")  # logged per epoch, the epoch as step
TERMINAL = {"ok": "FINISHED", "diverged": "FINISHED", "failed": "FAILED"}  # a trial's status -> its run's
# a tracking server that does not answer must not hold the driver for minutes (MLflow's defaults:
# 7 retries, 120 s per request); a variable the user set wins
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
MAX_PARAMS, MAX_METRICS = 100, 1000  # per log_batch request (MLflow's limits)
MAX_VALUE = 6000  # characters of a param or tag value


@dataclass
class TrialRun:
    """A trial's child run: its id, its `status` tag (a trial status, or "running") and the last
    epoch it holds metrics for (None: not looked up yet)."""

    run_id: str
    status: str
    last_epoch: int | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


def params_of(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config values as MLflow params: dotted keys, text values (lists as JSON)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(params_of(value, f"{name}."))
        else:
            out[name] = (json.dumps(value) if isinstance(value, (list, tuple)) else str(value))[:MAX_VALUE]
    return out


def trial_params(cfg) -> dict[str, str]:
    """Every knob of a trial's config (`TrialConfig`), dotted: model, optimizer, lr, weight_decay,
    epochs, seed, optimizer_args.*, dataset.*, train.* (the recipe), model_args.*."""
    return params_of(cfg.model_dump(mode="json", exclude={"extras"}))


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None  # a diverged epoch's NaN loss: not a point


def missing(value: Any) -> bool:
    """None, NaN or pd.NA."""
    try:
        return value is None or bool(value != value)  # NaN
    except (TypeError, ValueError):  # pd.NA; a list compares element-wise
        return not hasattr(value, "__len__")


def _tag(value: Any) -> str:
    if missing(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)[:MAX_VALUE]


class StudyRuns:
    """The runs of study `study` at tracking URI `uri`. Creating it reaches the tracking store
    (creates the experiment and the parent run when absent); every method may raise what MLflow
    raises for a store it cannot reach."""

    def __init__(self, uri: str, study: str):
        import logging

        from mlflow.tracking import MlflowClient

        for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):  # a new SQLite store's set-up, step by step
            logging.getLogger(name).setLevel(logging.WARNING)
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self.client = MlflowClient(tracking_uri=uri)
        self.study = study
        self.experiment_id = self._experiment()
        self.parent = self._parent()
        self.trials: dict[str, TrialRun] = self._children()

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.study)
        if found is None:
            try:
                return self.client.create_experiment(self.study)
            except Exception:  # another writer created it meanwhile
                found = self.client.get_experiment_by_name(self.study)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        return found.experiment_id

    def _search(self, filter_string: str) -> Iterable[Any]:
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, max_results=1000, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _parent(self) -> str:
        for run in self._search(f"tags.`{KIND}` = 'study'"):
            if run.data.tags.get("study") == self.study:
                return run.info.run_id
        run = self.client.create_run(self.experiment_id, run_name=self.study, tags={KIND: "study", "study": self.study})
        return run.info.run_id

    def _children(self) -> dict[str, TrialRun]:
        found: dict[str, TrialRun] = {}
        for run in self._search(f"tags.`{PARENT}` = '{self.parent}'"):
            tags = run.data.tags
            if tags.get(KIND) == "trial" and tags.get("trial_id") and tags["trial_id"] not in found:
                found[tags["trial_id"]] = TrialRun(run.info.run_id, tags.get("status", ""))
        return found

    def start_study(self) -> None:
        """The parent run is running (again): a sweep writes to it."""
        self.client.update_run(self.parent, status="RUNNING")

    def end_study(self, complete: bool = True) -> None:
        self.client.set_terminated(self.parent, "FINISHED" if complete else "KILLED")

    def trial(self, trial_id: str, name: str, params: Mapping[str, str], tags: Mapping[str, Any]) -> TrialRun:
        """The child run of `trial_id`: the one already there (running again unless it is done), or a
        new one with its params and tags (status "running")."""
        from mlflow.entities import Param

        run = self.trials.get(trial_id)
        if run is not None:
            if not run.done:
                self.client.update_run(run.run_id, status="RUNNING")
            return run
        all_tags = {KIND: "trial", PARENT: self.parent, "study": self.study, "trial_id": trial_id, "status": "running",
                    **{k: _tag(v) for k, v in tags.items()}}
        created = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        run = self.trials[trial_id] = TrialRun(created.info.run_id, "running", 0)
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS):
            self.client.log_batch(run.run_id, params=items[i:i + MAX_PARAMS])
        return run

    def log_epochs(self, run: TrialRun, points: Iterable[Mapping[str, Any]]) -> None:
        """train_loss, top1_err and lr of each epoch the run does not hold yet (a retry's repeated
        epochs are logged once), the epoch as step."""
        from mlflow.entities import Metric

        if run.last_epoch is None:
            history = self.client.get_metric_history(run.run_id, "top1_err")
            run.last_epoch = max((m.step for m in history), default=0)
        now = int(time.time() * 1000)
        metrics, last = [], run.last_epoch
        for point in points:
            epoch = int(point["epoch"])
            if epoch <= run.last_epoch:
                continue
            last = max(last, epoch)
            for key in EPOCH_METRICS:
                value = _number(point.get(key))
                if value is not None:
                    metrics.append(Metric(key, value, now, epoch))
        for i in range(0, len(metrics), MAX_METRICS):
            self.client.log_batch(run.run_id, metrics=metrics[i:i + MAX_METRICS])
        run.last_epoch = last

    def finish(self, run: TrialRun, row: Mapping[str, Any]) -> None:
        """The trial has ended with result `row`: its status, point, repeat (and error) as tags, the
        run FINISHED (ok, diverged) or FAILED."""
        from mlflow.entities import RunTag

        status = str(row.get("status"))
        tags = {"status": status, "point": _tag(row.get("point")), "repeat": _tag(row.get("repeat"))}
        if row.get("error"):
            tags["error"] = _tag(row["error"])
        self.client.log_batch(run.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run.run_id, TERMINAL.get(status, "FINISHED"))
        run.status = status
