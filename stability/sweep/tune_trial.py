"""What runs inside one Ray Tune trial (the driver's callbacks are in `callbacks`).

A one-worker trial runs the engine in the Tune trial process itself: no Ray Train start-up
(25-50 s per trial on a small box), and with `reuse_actors` the process, its imports and
its warm allocator serve trial after trial. A trial with `workers_per_trial > 1` builds a
Ray Train `TorchTrainer` (Train V2) whose workers run the same engine data-parallel; their
metrics reach Tune through `TuneReportCallback`.
"""

from __future__ import annotations

from typing import Any, Callable

import ray
from ray import tune

from stability.spec.trial import TrialConfig
from stability.sweep.callbacks import FINAL, MEMBER, group_key
from stability.sweep.secrets import use_environment
from stability.sweep.teachers import teacher_key
from stability.train.teacher import from_bytes


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


def trial_checkpoint(config: dict[str, Any], cfgs: list[TrialConfig], root: str | None):
    """The checkpoint of this Tune trial in the study's storage (`<study>/checkpoints/<key>/`), or None
    when checkpoints are off: a retry, a resume and a worker on another node all find it there.
    `root`: the checkpoints folder's full URI, which may carry credentials, so it reaches the trial
    through Ray's object store, never through the trial's config (Tune writes configs to disk)."""
    where = config.get("checkpoints")
    if not where or where["every"] == 0 or root is None:
        return None
    from stability.results.storage import location
    from stability.train.checkpoint import CheckpointPolicy, TrialCheckpoint

    return TrialCheckpoint(location(root) / group_key(cfgs), CheckpointPolicy(every_epochs=where["every"]))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker body: the engine with torch.distributed already set up by Ray Train."""
    from stability.train.engine import run_trial

    _set_threads(config["cpus"])
    if config.get("environment") is not None:
        use_environment(ray.get(config["environment"]))
    cfg: TrialConfig = config["trial"]
    teacher = teacher_checkpoint(cfg, config.get("teachers"))
    root = ray.get(config["checkpoints_root"]) if config.get("checkpoints_root") is not None else None
    checkpoint = trial_checkpoint(config, [cfg], root)  # every worker reads it; the engine's rank 0 writes it
    metrics = run_trial(cfg, device="auto", on_epoch=_report_to(ray.train.report), teacher=teacher,
                        checkpoint=checkpoint)
    ray.train.report(_final(metrics))


def run_fused_group(cfgs: list[TrialConfig], cpus: float, checkpoint) -> None:
    """Several study trials trained together (resources.fused_trials); each reports its own results."""
    from stability.train.fused.engine import run_fused_trials

    _set_threads(cpus)
    on_epoch = lambda k, point: tune.report({**point, FINAL: False, MEMBER: k})  # noqa: E731
    for k, metrics in enumerate(run_fused_trials(cfgs, device="auto", on_epoch=on_epoch, checkpoint=checkpoint)):
        tune.report({**_final(metrics), MEMBER: k})


def run_in_tune(config: dict[str, Any], groups: list[list[TrialConfig]],
                teachers: dict[str, bytes] | None = None, checkpoints_root: str | None = None,
                environment: dict[str, str] | None = None) -> None:
    """Tune trial function: one trial of the plan, or a fused group of them (`groups[config["group"]["index"]]`);
    `teachers`: distillation teacher checkpoints by teacher id; `checkpoints_root`: where checkpoints go;
    `environment`: the driver's credential variables (`secrets`). All four come through
    `tune.with_parameters` (Ray's object store), not the config Tune saves."""
    use_environment(environment)
    cfgs = groups[config["group"]["index"]]
    resources = config["resources"]
    if len(cfgs) > 1:
        run_fused_group(cfgs, resources["cpus_per_worker"], trial_checkpoint(config, cfgs, checkpoints_root))
        return
    cfg = cfgs[0]
    if resources["workers_per_trial"] == 1:
        from stability.train.engine import run_trial

        _set_threads(resources["cpus_per_worker"])
        metrics = run_trial(cfg, device="auto", on_epoch=_report_to(tune.report),
                            teacher=teacher_checkpoint(cfg, teachers),
                            checkpoint=trial_checkpoint(config, cfgs, checkpoints_root))
        tune.report(_final(metrics))
        return
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    gpus = resources["gpus_per_worker"]
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"trial": cfg, "cpus": resources["cpus_per_worker"], "checkpoints": config.get("checkpoints"),
                           "checkpoints_root": ray.put(checkpoints_root) if checkpoints_root is not None else None,
                           "environment": ray.put(environment or {}),
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
