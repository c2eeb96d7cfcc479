"""The arithmetic of a study's cost estimate (no torch, no Ray, no files).

The trials still to run are cut into the processes the sweep will run (fused groups of
`resources.fused_trials`, else one trial per process: `run.fused_groups`). A process of E epochs
costs `overhead_s + E x epoch_s`, with the figures of its shape (model, data, recipe, group size K:
`shape_key`) measured by a calibration or taken from the curves of an earlier study. Processes start
in plan order on `slots` places (as Ray Tune starts its trials: first come, first placed), each the
moment one is free; the study's wall time is

    wall_s = fixed_s + the time the last process ends      (fixed_s: the sweep's own start and end)

and its accelerator-hours are the processes' seconds x the GPUs each holds / 3600. Where a shape
has no figure, the estimate says which, and why, instead of a number.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from dataclasses import dataclass, field
from typing import Any

from stability.spec import StudySpec
from stability.spec.trial import TrialConfig

# The sweep's own cost outside its trials on a one-node cluster: driver imports, a private Ray
# instance, Tune, the first trial processes importing torch, shutting down. Measured on the 2-core
# CPU box of docs/benchmarks.md ("Orchestration share": 12 s per sweep); a cluster that is already
# up (--address) skips the Ray start (about 3 s of it).
SWEEP_FIXED_S = 12.0
CLUSTER_FIXED_S = 9.0


@dataclass(frozen=True)
class Figure:
    """What a process of one shape costs: seconds per epoch, seconds outside the epochs."""

    epoch_s: float
    overhead_s: float
    source: str  # "calibration", "curves" (of an earlier study) or "this study" (its own curves)
    where: str  # where the figure was measured, in words


@dataclass
class Estimate:
    wall_s: float | None
    accelerator_hours: float | None
    basis: str
    slots: int = 0
    processes: int = 0
    # each process's share of the wall time (its seconds / slots), and the process of each trial id
    process_share_s: list[float] = field(default_factory=list)
    trial_process: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out = {"wall_s": _round(self.wall_s, 2), "accelerator_hours": _round(self.accelerator_hours, 4),
               "basis": self.basis, "slots": self.slots, "processes": self.processes}
        return {**out, **self.details}


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def shape_key(cfg: TrialConfig, k: int) -> str:
    """What decides the cost of an epoch: everything of the config but its lr, weight decay, seed,
    extras and epochs, and the number of trials trained together."""
    from stability.train.fused.rules import shared_settings

    settings = {key: value for key, value in shared_settings(cfg).items() if key != "epochs"}
    text = json.dumps({"settings": settings, "k": k}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def describe_shape(cfg: TrialConfig, k: int) -> str:
    size = cfg.dataset.img_size or "native"
    return f"{cfg.model} on {cfg.dataset.name} at {size} px, batch {cfg.train.batch_size}" + (
        f", {k} trials fused" if k > 1 else "")


def processes(spec: StudySpec, todo: list[TrialConfig], saved: list[list[str]] = ()) -> list[list[TrialConfig]]:
    """The processes the sweep runs for `todo`, in the order it starts them."""
    from stability.sweep.run import fused_groups

    return fused_groups(todo, spec.resources.fused_trials, saved)


def per_process(spec: StudySpec, cluster_gpus: float) -> tuple[float, float]:
    """CPUs and GPUs one process holds, as `cluster.placement` decides them."""
    from stability.sweep.cluster import TRIAL_DRIVER_CPUS

    res = spec.resources
    gpus = res.gpus_per_worker
    if gpus is None:
        gpus = 1.0 / res.trials_per_gpu if cluster_gpus > 0 else 0.0
    cpus = res.workers_per_trial * res.cpus_per_worker + (TRIAL_DRIVER_CPUS if res.workers_per_trial > 1 else 0)
    return cpus, res.workers_per_trial * gpus


def slots(spec: StudySpec, cluster_cpus: float, cluster_gpus: float, n_processes: int) -> int:
    """How many processes run at once: what the cluster's CPUs and GPUs hold, capped by
    resources.max_concurrent and by the number of processes (0: one process does not fit)."""
    cpus, gpus = per_process(spec, cluster_gpus)
    fit = math.floor(cluster_cpus / cpus + 1e-9) if cpus > 0 else n_processes
    if gpus > 0:
        fit = min(fit, math.floor(cluster_gpus / gpus + 1e-9))
    if spec.resources.max_concurrent:
        fit = min(fit, spec.resources.max_concurrent)
    return max(0, min(fit, n_processes))


def makespan(durations: list[float], n_slots: int) -> float:
    """When the last of `durations` ends, each started in order as soon as one of `n_slots` is free."""
    if not durations:
        return 0.0
    free = [0.0] * n_slots
    for seconds in durations:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free)


def estimate(spec: StudySpec, groups: list[list[TrialConfig]], figures: dict[str, Figure], cluster_cpus: float,
             cluster_gpus: float, fixed_s: float, cluster_text: str) -> Estimate:
    """The wall time and accelerator-hours of running `groups` on the cluster described."""
    n_slots = slots(spec, cluster_cpus, cluster_gpus, len(groups))
    if not groups:
        return Estimate(0.0, 0.0, "nothing to run", 0, 0)
    _, gpus = per_process(spec, cluster_gpus)
    if n_slots == 0:
        cpus, _ = per_process(spec, cluster_gpus)
        return Estimate(None, None, f"no estimate: one trial needs {cpus:g} CPUs and {gpus:g} GPUs but the "
                                    f"cluster has {cluster_cpus:g} CPUs and {cluster_gpus:g} GPUs ({cluster_text})")
    missing: dict[str, str] = {}
    durations: list[float] = []
    sources: dict[str, set[str]] = {}
    for group in groups:
        key = shape_key(group[0], len(group))
        figure = figures.get(key)
        if figure is None:
            missing.setdefault(key, describe_shape(group[0], len(group)))
            continue
        durations.append(figure.overhead_s + group[0].epochs * figure.epoch_s)
        sources.setdefault(figure.where, set()).add(group[0].model)
    if missing:
        return Estimate(None, None, f"no estimate: no calibration or earlier study measured "
                                    f"{'; '.join(sorted(set(missing.values())))} (--calibrate times them first)", n_slots, len(groups),
                        details={"missing": sorted(set(missing.values()))})
    trials_s = makespan(durations, n_slots)
    shares = [seconds / n_slots for seconds in durations]
    owner = {cfg.trial_id: i for i, group in enumerate(groups) for cfg in group}
    measured = "; ".join(f"{', '.join(sorted(models))}: {where}" for where, models in sorted(sources.items()))
    basis = (f"per-epoch times ({measured}) x the plan's epochs, {len(groups)} processes, {n_slots} at once on "
             f"{cluster_text}, + {fixed_s:g} s for the sweep's own start and end")
    gpu_s = sum(durations) * gpus
    return Estimate(fixed_s + trials_s, gpu_s / 3600, basis, n_slots, len(groups), shares, owner,
                    details={"trials_s": round(trials_s, 1), "process_s": round(sum(durations), 1),
                             "accelerator": "GPU" if gpus > 0 else "none (CPU only)",
                             "cpu_hours": round(sum(durations) * per_process(spec, cluster_gpus)[0] / 3600, 4)})
