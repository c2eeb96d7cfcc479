"""What runs inside one Ray Tune trial, and the driver-side callback that stores results.

A one-worker trial runs the engine in the Tune trial process itself: no Ray Train start-up
(25-50 s per trial on a small box), and with `reuse_actors` the process, its imports and
its warm allocator serve trial after trial. A trial with `workers_per_trial > 1` builds a
Ray Train `TorchTrainer` (Train V2) whose workers run the same engine data-parallel; their
metrics reach Tune through `TuneReportCallback`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import ray
from ray import tune

from stability.results.schema import failed_row, trial_row
from stability.results.store import ResultsStore
from stability.spec.trial import TrialConfig
from stability.sweep.teachers import teacher_key
from stability.train.checkpoint import from_bytes

FINAL = "stability_final"  # key marking the last report of a trial (its metrics)
MEMBER = "stability_member"  # index of the study trial a report belongs to within a fused group


def _report_to(report: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda point: report({**point, FINAL: False})


def _final(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in metrics.items() if k != "curve"}
    out[FINAL] = True
    return out


def _set_threads(cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def teacher_checkpoint(cfg: TrialConfig, teachers: dict[str, bytes] | None) -> dict[str, Any] | None:
    """Inside a trial: the loaded checkpoint of its teacher (None: no teacher, or a path the engine reads)."""
    key = teacher_key(cfg)
    if key is None:
        return None
    if not teachers or key not in teachers:
        raise RuntimeError(f"teacher {cfg.train.distillation.teacher} of this trial was not trained")
    return from_bytes(teachers[key])


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker body: the engine with torch.distributed already set up by Ray Train."""
    from stability.train.engine import run_trial

    _set_threads(config["cpus"])
    cfg: TrialConfig = config["trial"]
    teacher = teacher_checkpoint(cfg, config.get("teachers"))
    metrics = run_trial(cfg, device="auto", on_epoch=_report_to(ray.train.report), teacher=teacher)
    ray.train.report(_final(metrics))


def run_fused_group(cfgs: list[TrialConfig], cpus: float) -> None:
    """Several study trials trained together (resources.fused_trials); each reports its own results."""
    from stability.train.fused.engine import run_fused_trials

    _set_threads(cpus)
    on_epoch = lambda k, point: tune.report({**point, FINAL: False, MEMBER: k})  # noqa: E731
    for k, metrics in enumerate(run_fused_trials(cfgs, device="auto", on_epoch=on_epoch)):
        tune.report({**_final(metrics), MEMBER: k})


def run_in_tune(config: dict[str, Any], groups: list[list[TrialConfig]],
                teachers: dict[str, bytes] | None = None) -> None:
    """Tune trial function: one trial of the plan, or a fused group of them (`groups[config["group"]["index"]]`);
    `teachers`: distillation teacher checkpoints by teacher id."""
    cfgs = groups[config["group"]["index"]]
    resources = config["resources"]
    if len(cfgs) > 1:
        run_fused_group(cfgs, resources["cpus_per_worker"])
        return
    cfg = cfgs[0]
    if resources["workers_per_trial"] == 1:
        from stability.train.engine import run_trial

        _set_threads(resources["cpus_per_worker"])
        metrics = run_trial(cfg, device="auto", on_epoch=_report_to(tune.report),
                            teacher=teacher_checkpoint(cfg, teachers))
        tune.report(_final(metrics))
        return
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    gpus = resources["gpus_per_worker"]
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"trial": cfg, "cpus": resources["cpus_per_worker"],
                           "teachers": {k: v for k, v in (teachers or {}).items() if k == teacher_key(cfg)}},
        scaling_config=ScalingConfig(
            num_workers=resources["workers_per_trial"],
            use_gpu=gpus > 0,
            resources_per_worker={"CPU": resources["cpus_per_worker"], **({"GPU": gpus} if gpus > 0 else {})},
        ),
        run_config=RunConfig(name=f"trial-{cfg.trial_id}", storage_path=config["train_storage"],
                             callbacks=[TuneReportCallback()]),
    )
    trainer.fit()


class StoreCallback(tune.Callback):
    """Driver side: collects each trial's curve and writes its row when the trial ends.

    Runs in the driver only, so the store has a single writer; every write is atomic.
    """

    def __init__(self, study: str, store: ResultsStore, groups: list[list[TrialConfig]],
                 on_finished: Callable[[dict[str, Any]], None]):
        self.study = study
        self.store = store
        self.groups = groups
        self.on_finished = on_finished
        self.curves: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.written: set[tuple[str, int]] = set()

    def _configs(self, trial) -> list[TrialConfig]:
        return self.groups[trial.config["group"]["index"]]

    def _reset(self, trial) -> None:
        for key in [key for key in self.curves if key[0] == trial.trial_id]:
            del self.curves[key]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._reset(trial)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._reset(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        key = (trial.trial_id, int(result.get(MEMBER, 0)))
        curve = self.curves.setdefault(key, [])
        if not result.get(FINAL, False):
            if result.get("epoch") == 1:
                curve.clear()  # a retried trial starts its curve again
            curve.append({k: result.get(k) for k in ("epoch", "train_loss", "top1_err", "lr", "elapsed_s")})
            return
        row = trial_row(self.study, self._configs(trial)[key[1]], result)
        self.store.write_trial(row, curve)
        self.written.add(key)
        self.on_finished(row)

    def on_trial_error(self, iteration, trials, trial, **info):
        message = _last_error_line(trial)
        for member, cfg in enumerate(self._configs(trial)):
            if (trial.trial_id, member) in self.written:
                continue
            row = failed_row(self.study, cfg, message)
            self.store.write_trial(row, [])
            self.on_finished(row)


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
