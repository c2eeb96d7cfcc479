"""Driver-side Tune callbacks: the store callback (rows, curves, running.json, checkpoint clean-up)
and the progress forwarder. They run in the driver only, so the study folder has one writer."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from stability.results.schema import failed_row, trial_row
from stability.results.store import ResultsStore
from stability.spec.trial import TrialConfig

FINAL = "stability_final"  # key marking the last report of a trial (its metrics)
MEMBER = "stability_member"  # index of the study trial a report belongs to within a fused group
CURVE_KEYS = ("epoch", "train_loss", "top1_err", "lr", "elapsed_s")


def group_key(cfgs: list[TrialConfig]) -> str:
    """Name of a Tune trial's checkpoint folder: its first study trial's id (a fused group is
    rebuilt with the same members on resume, so the name is stable)."""
    return cfgs[0].trial_id


class StoreCallback(tune.Callback):
    """Collects each trial's curve (one point per epoch, whatever restarts happened), writes its row
    when it ends, keeps `running.json` current and deletes a group's checkpoint once every row of it
    is stored. `on_changed` (the live report) hears of each stored row and of the end of the run;
    `tracker` (`--mlflow`, stability.sweep.tracking) of each epoch and, once it is on disk, each row."""

    def __init__(self, study: str, store: ResultsStore, groups: list[list[TrialConfig]],
                 on_finished: Callable[[dict[str, Any]], None], on_changed: Callable[[], None] | None = None,
                 tracker=None):
        self.study = study
        self.store = store
        self.groups = groups
        self.on_finished = on_finished
        self.on_changed = on_changed
        self.tracker = tracker
        self.curves: dict[str, dict[int, dict[str, Any]]] = {}  # study trial id -> epoch -> point
        self.written: set[str] = set()
        self.running: dict[str, dict[str, Any]] = {}

    def _configs(self, trial) -> list[TrialConfig]:
        return self.groups[trial.config["group"]["index"]]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        cfgs = self._configs(trial)
        cfg = cfgs[int(result.get(MEMBER, 0))]
        if not result.get(FINAL, False):
            # keyed by epoch: a retry that resumes from a checkpoint, or starts over, overwrites
            # what it repeats, so the curve holds every epoch once
            point = {k: result.get(k) for k in CURVE_KEYS}
            self.curves.setdefault(cfg.trial_id, {})[int(point["epoch"])] = point
            self._running(cfg, int(point["epoch"]), group_key(cfgs))
            if self.tracker is not None:
                self.tracker.epoch(cfg, point)
            return
        self._store(cfgs, cfg, trial_row(self.study, cfg, result))

    def on_trial_error(self, iteration, trials, trial, **info):
        message = _last_error_line(trial)
        cfgs = self._configs(trial)
        for cfg in cfgs:
            if cfg.trial_id not in self.written:
                self._store(cfgs, cfg, failed_row(self.study, cfg, message))

    def _store(self, cfgs: list[TrialConfig], cfg: TrialConfig, row: dict[str, Any]) -> None:
        curve = [point for _, point in sorted(self.curves.pop(cfg.trial_id, {}).items())]
        self.store.write_trial(row, curve if row["status"] != "failed" else [])
        self.written.add(cfg.trial_id)
        if self.tracker is not None:
            self.tracker.stored(cfg, row, curve if row["status"] != "failed" else [])
        self.running.pop(cfg.trial_id, None)
        self.store.write_running(self.running)
        if all(c.trial_id in self.written for c in cfgs):
            self.store.remove_checkpoint(group_key(cfgs))
        self.on_finished(row)
        if self.on_changed is not None:
            self.on_changed()

    def stopped(self) -> None:
        """Tune's run has ended (or was stopped): no trial runs any more, and `running.json` says so."""
        if self.running:
            self.running.clear()
            self.store.write_running(self.running)
            if self.on_changed is not None:
                self.on_changed()

    def _running(self, cfg: TrialConfig, epoch: int, key: str) -> None:
        self.running[cfg.trial_id] = {"epoch": epoch, "epochs": cfg.epochs, "model": cfg.model,
                                      "optimizer": cfg.optimizer, "checkpoint": key, "updated": time.time()}
        self.store.write_running(self.running)


class ProgressCallback(tune.Callback):
    """Forwards Tune's trial starts and ends to the sweep's progress display."""

    def __init__(self, progress):
        self.progress = progress

    def on_trial_start(self, iteration, trials, trial, **info):
        self.progress.started(trial.trial_id, trial.config["group"]["size"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.progress.ended(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.progress.ended(trial.trial_id)


def _last_error_line(trial) -> str:
    """The exception line of a failed trial's traceback (Tune's text error file; no pickle)."""
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:  # the error file may be gone with a lost node
        text = ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "trial failed (no error message recorded)"
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line[-500:]
    return lines[-1][-500:]
