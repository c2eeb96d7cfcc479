"""Distillation teachers given by model name: trained once per study by the sweep (Ray tasks), before the
distilled trials, stored as `<study>/teachers/<model>-<id>.pt` (+ a .json of its metrics) and
reused by every distilled trial and by a resume. A teacher given as a checkpoint path is only
checked here; a trial loads its teacher in `tune_trial`. The id is the teacher trial's own config hash, so a changed teacher recipe trains
a new teacher. The study folder may be on an object store (`storage.ObjectPath`): the files are then
read whole and written in one PUT each.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stability.results.storage import StoragePath, location
from stability.spec.trial import TrialConfig
from stability.train.teacher import teacher_config, teacher_is_checkpoint


def teacher_key(cfg: TrialConfig) -> str | None:
    """Id of the teacher the sweep must train for `cfg`, or None (no distillation, or a checkpoint)."""
    distill = cfg.train.distillation
    if not distill.active or teacher_is_checkpoint(distill.teacher):
        return None
    return teacher_config(cfg).trial_id


def planned_teachers(plan: list[TrialConfig]) -> dict[str, TrialConfig]:
    teachers: dict[str, TrialConfig] = {}
    for cfg in plan:
        key = teacher_key(cfg)
        if key is not None and key not in teachers:
            teachers[key] = teacher_config(cfg)
    return teachers


def teacher_file(root: StoragePath, key: str, tcfg: TrialConfig) -> StoragePath:
    return location(root) / "teachers" / f"{tcfg.model}-{key}.pt"


def _train_teacher(trial: dict[str, Any], cpus: float) -> tuple[bytes | None, dict[str, Any]]:
    """Ray task body: train one teacher; its checkpoint travels back as bytes (no shared disk needed)."""
    import tempfile

    import torch

    from stability.train.engine import run_trial

    torch.set_num_threads(max(1, int(cpus)))
    cfg = TrialConfig.model_validate(trial)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "teacher.pt"
        metrics = run_trial(cfg, device="auto", checkpoint_to=str(path))
        blob = path.read_bytes() if path.is_file() else None
    return blob, {k: v for k, v in metrics.items() if k not in ("curve", "patch_cos_sim_layers")}


def ensure_teachers(plan: list[TrialConfig], root: StoragePath, resources: dict[str, Any], console) -> tuple[dict[str, bytes], dict[str, str]]:
    """Checkpoint bytes of every teacher the plan needs (training the missing ones on Ray, all at
    once), and a message per teacher that could not be trained."""
    import ray

    from stability.results.files import atomic_write_bytes, atomic_write_text

    teachers = planned_teachers(plan)
    blobs: dict[str, bytes] = {}
    missing = {}
    for key, tcfg in teachers.items():
        path = teacher_file(root, key, tcfg)
        if path.is_file():
            blobs[key] = path.read_bytes()
        else:
            missing[key] = tcfg
    if not missing:
        return blobs, {}
    names = ", ".join(f"{t.model} ({t.optimizer}, {t.epochs} epochs)" for t in missing.values())
    console.print(f"training {len(missing)} distillation teacher(s) first: {names}")
    task = ray.remote(_train_teacher).options(num_cpus=resources["cpus_per_worker"], num_gpus=resources["gpus_per_worker"])
    refs = {key: task.remote(tcfg.model_dump(mode="json"), resources["cpus_per_worker"]) for key, tcfg in missing.items()}
    failures: dict[str, str] = {}
    for key, ref in refs.items():
        tcfg = missing[key]
        try:
            blob, metrics = ray.get(ref)
        except Exception as exc:  # a crashed teacher fails its students, not the study
            failures[key] = f"teacher {tcfg.model} failed: {str(exc).strip().splitlines()[-1]}"
            continue
        if blob is None:
            failures[key] = f"teacher {tcfg.model} {metrics['status']} (lr {tcfg.lr:g}); change train.distillation.teacher_recipe"
            continue
        path = teacher_file(root, key, tcfg)
        atomic_write_text(path.with_suffix(".json"), json.dumps({"config": tcfg.model_dump(mode="json"), "metrics": metrics}, indent=1))
        atomic_write_bytes(path, blob)
        blobs[key] = blob
        console.print(f"teacher {tcfg.model}: top-1 error {metrics['top1_err']:.2f}% -> {path}")
    for message in failures.values():
        console.print(message)
    return blobs, failures
