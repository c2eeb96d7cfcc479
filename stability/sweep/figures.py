"""Where the estimate's per-epoch figures come from, and the estimate a dry run and a run print.

Figures per shape (`estimate.shape_key`: model, data, recipe, trials fused), first found first taken:

1. the study's own curves (a resumed or extended study): what its finished trials measured;
2. the curves of an earlier study in the same storage root that trained the same shape (only the
   studies whose study.yaml names one of the models and the dataset are read): each
   trial's `elapsed_s` per epoch in `curves.parquet` (the median step between epochs is the epoch,
   the first epoch's excess and the time after the last epoch the overhead; a fused group's members
   share their group's clock, so their figure is the group's);
3. a calibration cached in `<storage>/.calibration/<machine>.json`: a few training steps of the shape
   on the trials' device (`stability.train.calibrate`), written by an earlier run.

A run calibrates the shapes none of these covers before its trials start, in Ray tasks that each hold
a trial's resources (so on the trials' kind of device), as many at once as trials will share a device
(`sharing`), and caches the result for later runs and dry runs. A dry run writes nothing and starts
nothing: it reads these figures only, and where they miss a shape it says so (a run, or
`--calibrate`, fills the cache; `--calibrate` times one process alone, so on a device the trials
share it is optimistic). The cache lives beside the studies,
never inside a study folder, so dry runs and refused runs leave every study folder as it was.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import statistics
from pathlib import Path
from typing import Any

from stability.spec import SpecError, StudySpec
from stability.spec.trial import TrialConfig
from stability.sweep.estimate import (
    CLUSTER_FIXED_S,
    SWEEP_FIXED_S,
    Estimate,
    Figure,
    describe_shape,
    estimate,
    processes,
    shape_key,
)

CACHE_DIR = ".calibration"


# --- figures from curves -----------------------------------------------------------------------------
def study_folders(root) -> list:
    """The study folders (holding a study.yaml) directly under the storage root."""
    if isinstance(root, Path):
        try:
            return sorted(p for p in root.iterdir() if (p / "study.yaml").is_file())
        except (FileNotFoundError, NotADirectoryError):
            return []
    import pyarrow.fs as pafs

    infos = root.fs.get_file_info(pafs.FileSelector(root.path, allow_not_found=True))
    folders = [root / info.base_name for info in infos if info.type == pafs.FileType.Directory]
    return sorted((f for f in folders if (f / "study.yaml").is_file()), key=str)


def curve_figures(folder, source: str) -> tuple[dict[str, Figure], set[str]]:
    """Figures measured by the finished trials of the study in `folder`, and their trial ids."""
    import yaml

    from stability.results.store import StoreError, read_study
    from stability.sampling import plan_trials
    from stability.spec import parse_spec
    from stability.sweep.run import fused_groups

    try:
        result = read_study(folder)
        spec = parse_spec(yaml.safe_dump((result.spec or {})["spec"]), str(folder))
        plan = plan_trials(spec)
    except (FileNotFoundError, StoreError, SpecError, KeyError, TypeError, OSError):
        return {}, set()  # no results, or a spec this version cannot plan: nothing measured here
    trials, curves = result.trials, result.curves
    if trials.empty or curves.empty:
        return {}, set(trials["trial_id"]) if not trials.empty else set()
    ok = trials[trials["status"] == "ok"].set_index("trial_id")["wall_time_s"].to_dict()
    samples: dict[str, list[tuple[float, float]]] = {}
    described: dict[str, str] = {}
    for group in fused_groups(plan, spec.resources.fused_trials):
        key = shape_key(group[0], len(group))
        described[key] = describe_shape(group[0], len(group))
        for cfg in group:
            if cfg.trial_id in ok:
                samples.setdefault(key, []).append((cfg.trial_id, ok[cfg.trial_id]))
    by_trial = {tid: c.sort_values("epoch")["elapsed_s"].tolist() for tid, c in curves.groupby("trial_id")}
    figures = {}
    for key, members in samples.items():
        epochs, overheads = [], []
        for tid, wall in members:
            elapsed = by_trial.get(tid) or []
            if not elapsed:
                continue
            steps = [b - a for a, b in itertools.pairwise(elapsed)]
            epoch_s = statistics.median(steps) if steps else elapsed[0]
            epochs.append(epoch_s)
            overheads.append(max(0.0, wall - len(elapsed) * epoch_s))
        if epochs:
            figures[key] = Figure(statistics.median(epochs), statistics.median(overheads), source,
                                  f"{'its own' if source == 'this study' else 'the'} curves of {folder}")
    return figures, set(trials["trial_id"])


# --- the calibration cache -------------------------------------------------------------------------
def cache_folder(storage_root):
    return storage_root / CACHE_DIR


def read_cache(storage_root, kind: str, threads: int | None) -> dict[str, Figure]:
    """Cached calibrations of `kind` (cpu or cuda) devices; for the CPU, those of `threads` threads.
    Newer files win over older ones."""
    folder = cache_folder(storage_root)
    try:
        files = [p for p in (folder.iterdir() if isinstance(folder, Path) else folder.files()) if p.name.endswith(".json")]
    except (FileNotFoundError, NotADirectoryError):
        return {}
    records = []
    for path in files:
        try:
            record = json.loads(path.read_text())
            machine = record["machine"]
            if machine["kind"] != kind or (kind == "cpu" and threads is not None and machine["threads"] != threads):
                continue
            records.append(record)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged cache file is no figure; the next run rewrites it
    figures: dict[str, Figure] = {}
    for record in sorted(records, key=lambda r: str(r.get("updated", ""))):
        machine = record["machine"]
        for key, item in (record.get("figures") or {}).items():
            try:
                figures[key] = Figure(float(item["epoch_s"]), float(item["overhead_s"]), "calibration",
                                      f"calibrated {item.get('date', '?')} on {machine['kind']} {machine['name']}"
                                      + (f" ({machine['threads']} thread(s))" if kind == "cpu" else ""))
            except (KeyError, TypeError, ValueError):
                continue
    return figures


def write_cache(storage_root, results: list[dict[str, Any]], keys: list[str]) -> None:
    """Add calibration results (one per shape key) to their machine's cache file."""
    from stability.results.files import atomic_write_text

    folder = cache_folder(storage_root)
    by_machine: dict[str, list] = {}
    for key, result in zip(keys, results):
        by_machine.setdefault(result["machine"]["key"], []).append((key, result))
    for machine_key, items in by_machine.items():
        path = folder / f"{machine_key}.json"
        try:
            record = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            record = {}
        figures = record.get("figures") if isinstance(record.get("figures"), dict) else {}
        today = datetime.date.today().isoformat()
        for key, result in items:
            figures[key] = {**{k: v for k, v in result.items() if k != "machine"}, "date": today}
        record = {"machine": items[0][1]["machine"], "updated": datetime.datetime.now().isoformat(timespec="seconds"),
                  "figures": figures}
        text = json.dumps(record, indent=1, sort_keys=True) + "\n"
        if isinstance(path, Path):
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
        else:
            path.write_text(text)


# --- the figures of a study --------------------------------------------------------------------------
def gather(spec: StudySpec, storage_root, study_root, kind: str, threads: int | None) -> tuple[dict[str, Figure], set[str]]:
    """Every figure available without running anything, and the ids of the study's finished trials."""
    figures = read_cache(storage_root, kind, threads)
    for folder in reversed(study_folders(storage_root)):
        if str(folder) != str(study_root) and _may_share_shapes(folder, spec):
            figures.update(curve_figures(folder, "curves")[0])
    own, finished = curve_figures(study_root, "this study") if study_root.exists() else ({}, set())
    figures.update(own)
    return figures, finished


def _may_share_shapes(folder, spec: StudySpec) -> bool:
    """Whether the study in `folder` trained a model of `spec` on its dataset (its study.yaml says;
    reading only that keeps a storage of many studies from costing every dry run all their curves)."""
    import yaml

    try:
        saved = yaml.safe_load((folder / "study.yaml").read_text())["spec"]
        names = {m if isinstance(m, str) else m.get("name") for m in saved.get("models", [])}
        dataset = saved.get("dataset") or {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return False
    return bool(names & {entry.name for entry in spec.model_entries()}) and dataset.get("name") == spec.dataset.name


def local_gpus() -> int:
    """GPUs of this machine, without CUDA: CUDA_VISIBLE_DEVICES when set, else the NVIDIA device files."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len([p for p in Path("/dev").glob("nvidia[0-9]*")])


def cluster_size(text: str) -> tuple[float, float]:
    """--cluster CPUS,GPUS (argparse type)."""
    import argparse

    try:
        cpus, _, gpus = text.partition(",")
        value = (float(cpus), float(gpus or 0))
    except ValueError:
        value = (0.0, -1.0)
    if not (0 < value[0] < float("inf") and 0 <= value[1] < float("inf")):
        raise argparse.ArgumentTypeError(f"expected CPUS,GPUS (e.g. 64,8), got {text!r}")
    return value


def dry_run_estimate(spec: StudySpec, plan: list[TrialConfig], storage_root, args, calibrate: bool = False) -> dict[str, Any]:
    """The dry run's `estimate`: reads figures only (with --calibrate, first calibrates on this machine
    what they miss); the cluster is --cluster, else this machine."""
    failed = ""
    if calibrate:
        try:
            calibrate_here(spec, plan, storage_root)
        except Exception as exc:  # noqa: BLE001 -- refuse nothing: the estimate says why it has no figure
            failed = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
    address, num_cpus, cluster = args.address, args.num_cpus, args.cluster
    if cluster is not None:
        cpus, gpus = cluster
        where = f"the cluster given by --cluster ({cpus:g} CPUs, {gpus:g} GPUs)"
    else:
        cpus, gpus = float(num_cpus or os.cpu_count() or 1), float(local_gpus())
        where = f"this machine ({cpus:g} CPUs, {gpus:g} GPUs)" + (
            "; the cluster at --address is not asked in a dry run: give its size with --cluster CPUS,GPUS"
            if address else "")
    fixed = CLUSTER_FIXED_S if address else SWEEP_FIXED_S
    kind = "cuda" if gpus > 0 and spec.resources.gpus_per_worker != 0 else "cpu"
    threads = max(1, int(spec.resources.cpus_per_worker)) if kind == "cpu" else None
    figures, finished = gather(spec, storage_root, storage_root / spec.name, kind, threads)
    todo = [cfg for cfg in plan if cfg.trial_id not in finished]
    result = estimate(spec, processes(spec, todo), figures, cpus, gpus, fixed, where)
    if result.wall_s is None and "missing" in result.details:
        result.basis += (f"; a run calibrates them on the trials' device first and caches the figures in "
                         f"{cache_folder(storage_root)}, and `--dry-run --calibrate` does it on this machine")
    if failed:
        result.basis += f"; --calibrate failed here: {failed}"
    return {**result.as_json(), "trials_to_run": len(todo)}


def calibrate_here(spec: StudySpec, plan: list[TrialConfig], storage_root, console=None) -> list[str]:
    """`--dry-run --calibrate`: calibrate, in this process, the shapes no figure covers; cache them."""
    import torch

    from stability.train.calibrate import calibrate

    threads = max(1, int(spec.resources.cpus_per_worker))
    torch.set_num_threads(threads)
    kind = "cuda" if torch.cuda.is_available() and spec.resources.gpus_per_worker != 0 else "cpu"
    figures, finished = gather(spec, storage_root, storage_root / spec.name, kind, threads)
    groups = missing_groups(processes(spec, [c for c in plan if c.trial_id not in finished]), figures)
    results = [calibrate(group, workers=spec.resources.workers_per_trial) for group in groups.values()]
    if results:
        write_cache(storage_root, results, list(groups))
    return [describe_shape(g[0], len(g)) for g in groups.values()]


def missing_groups(groups: list[list[TrialConfig]], figures: dict[str, Figure]) -> dict[str, list[TrialConfig]]:
    """One group per shape that no figure covers (the first of the plan's groups of that shape)."""
    missing: dict[str, list[TrialConfig]] = {}
    for group in groups:
        key = shape_key(group[0], len(group))
        if key not in figures and key not in missing:
            missing[key] = group
    return missing


def _calibrate_task(groups: list[list[TrialConfig]], threads: int, workers: int) -> list[dict[str, Any]]:
    """Inside a Ray task holding one worker's resources: calibrate each group on its device."""
    import torch

    from stability.train.calibrate import calibrate

    torch.set_num_threads(max(1, threads))
    return [calibrate(group, workers=workers) for group in groups]


def run_estimate(spec: StudySpec, todo: list[TrialConfig], resources: dict[str, Any], storage_root, study_root,
                 address: str | None, saved_groups: list[list[str]] = (), calibrate: bool = False) -> Estimate:
    """A run's estimate on the cluster it joined: figures read, missing shapes calibrated (cached) on a
    cluster with GPUs or with `calibrate` (--calibrate; a CPU study, a laptop's or a test's, starts its
    trials at once and its progress line's ETA follows their pace), then the arithmetic. The calibration runs as many Ray tasks at once, each holding one trial's
    resources, as trials will share a device in the run (`sharing`: trials per GPU, or the trials
    at once on a CPU-only cluster, at most 8), so it meets the contention the trials will meet;
    the figures are the mean of the copies."""
    import time

    import ray

    cluster = ray.cluster_resources()
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    kind = "cuda" if resources["gpus_per_worker"] > 0 else "cpu"
    threads = max(1, int(resources["cpus_per_worker"])) if kind == "cpu" else None
    figures, _ = gather(spec, storage_root, study_root, kind, threads)
    groups = processes(spec, todo, saved_groups)
    missing = missing_groups(groups, figures)
    spent = 0.0
    if missing and (calibrate or gpus > 0):
        start = time.monotonic()
        task = ray.remote(_calibrate_task).options(num_cpus=resources["cpus_per_worker"],
                                                    num_gpus=resources["gpus_per_worker"])
        copies = ray.get([task.remote(list(missing.values()), int(resources["cpus_per_worker"]),
                                      resources["workers_per_trial"])
                          for _ in range(sharing(spec, resources, cpus, gpus, len(groups)))])
        results = [mean_result(same) for same in zip(*copies)]
        spent = time.monotonic() - start
        try:
            write_cache(storage_root, results, list(missing))
        except OSError:
            pass  # the cache is an aid: a storage that refuses it costs a calibration next time
        machine = results[0]["machine"]
        for key, result in zip(missing, results):
            figures[key] = Figure(result["epoch_s"], result["overhead_s"], "calibration",
                                  f"calibrated now on {machine['kind']} {machine['name']}")
    where = f"the cluster ({cpus:g} CPUs, {gpus:g} GPUs)"
    result = estimate(spec, groups, figures, cpus, gpus, CLUSTER_FIXED_S if address else SWEEP_FIXED_S, where)
    if result.wall_s is not None and spent:
        result.wall_s += spent
        result.basis += f", + {spent:.0f} s of calibration"
    return result


def sharing(spec: StudySpec, resources: dict[str, Any], cpus: float, gpus: float, n_processes: int) -> int:
    """How many trials will share one device at once: trials per GPU, or on a CPU-only cluster the
    trials at once (capped at 8: a node's worth), never more than the run has processes."""
    from stability.sweep.estimate import slots

    at_once = max(1, slots(spec, cpus, gpus, n_processes))
    if resources["gpus_per_worker"] > 0:
        return max(1, min(at_once, round(1 / resources["gpus_per_worker"]) if resources["gpus_per_worker"] < 1 else 1))
    return min(at_once, 8)


def mean_result(copies: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """One calibration result from copies that ran at once: their mean times, the first's other fields."""
    out = dict(copies[0])
    for key in ("step_s", "val_batch_s", "epoch_s", "overhead_s", "wall_s"):
        out[key] = sum(c[key] for c in copies) / len(copies)
    out["copies"] = len(copies)
    return out


def safe_run_estimate(*args, **kwargs) -> Estimate:
    """`run_estimate`, whose failure (a calibration that cannot run) is a reason, never the run's end."""
    try:
        return run_estimate(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- the estimate is an aid; the trials report their own errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        return Estimate(None, None, f"no estimate: the calibration failed ({first[:300]})")


def estimate_line(result: Estimate) -> str:
    """The estimate in one line, as a run prints it before its trials."""
    from stability.sweep.progress import format_duration

    if result.wall_s is None:
        return result.basis  # "no estimate: <why>"
    hours = f"{result.accelerator_hours:.2f} GPU-hours" if result.details.get("accelerator") == "GPU" else "no GPU"
    return f"estimate: {format_duration(result.wall_s)} wall, {hours} ({result.basis})"
