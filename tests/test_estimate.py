"""The cost estimate: from an earlier study's curves (the arithmetic on them), from a cached
calibration (reused, never redone), in a dry run (keys, nothing written, no Ray) and in a run
(calibrated on the trials' device in a Ray task, printed before the trials, cached)."""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import TESTS

from stability.results.store import ResultsStore
from stability.sampling import plan_trials
from stability.spec import load_spec
from stability.sweep.__main__ import main as sweep_main
from stability.sweep.estimate import (
    SWEEP_FIXED_S,
    Estimate,
    makespan,
    processes,
    shape_key,
    slots,
)
from stability.sweep.figures import CACHE_DIR
from stability.sweep.progress import SweepProgress

TINY = str(TESTS / "data" / "tiny.yaml")


def write_earlier_study(storage: Path, name: str = "earlier", sets: tuple[str, ...] = ()) -> dict[str, list[float]]:
    """The tiny study, stored under another name as a finished study with chosen per-epoch times;
    returns each trial's elapsed_s per epoch (and its wall time last)."""
    spec = load_spec(TINY, [f"name={name}", *sets])
    plan = plan_trials(spec)
    store = ResultsStore(storage / name, {"mixup": pa.float64()})
    store.write_spec(spec, {"stability": "test"})
    measured = {}
    for i, cfg in enumerate(plan):
        epoch_s = 1.0 + 0.25 * i + (0.5 if cfg.model == "vit_c_tiny" else 0.0)
        elapsed = [0.75 + epoch_s * e for e in range(1, cfg.epochs + 1)]
        wall = elapsed[-1] + 0.5
        measured[cfg.trial_id] = [*elapsed, wall]
        curve = [{"epoch": e, "train_loss": 1.0, "top1_err": 50.0, "lr": cfg.lr, "elapsed_s": t}
                 for e, t in enumerate(elapsed, start=1)]
        store.write_trial({"study": name, "trial_id": cfg.trial_id, "model": cfg.model, "optimizer": cfg.optimizer,
                           "lr": cfg.lr, "weight_decay": cfg.weight_decay, "epochs": cfg.epochs, "seed": cfg.seed,
                           "batch_size": cfg.train.batch_size, "status": "ok", "top1_err": 50.0, "best_top1_err": 50.0,
                           "train_loss": 1.0, "wall_time_s": wall, "images_per_s": 100.0, "params": 1000,
                           "gflops": 0.01, "patch_cos_sim": 0.3, "error": "", "mixup": cfg.train.mixup}, curve)
    return measured


def dry_estimate(capsys, *argv: str) -> dict:
    """The dry run's JSON, as many trials at once as the cluster allows (tiny.yaml itself runs one at a time)."""
    assert sweep_main([TINY, "--dry-run", "--set", "resources.max_concurrent=64", *argv]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_estimate_from_an_earlier_study_is_the_arithmetic_on_its_curves(tmp_path, capsys):
    storage = tmp_path / "runs"
    measured = write_earlier_study(storage)
    plan = plan_trials(load_spec(TINY))
    # per shape (model, recipe: the sampled mixup takes part): median epoch step and median overhead
    by_shape: dict[str, list] = {}
    earlier = plan_trials(load_spec(TINY, ["name=earlier"]))
    for cfg in earlier:
        *elapsed, wall = measured[cfg.trial_id]
        epoch_s = statistics.median([b - a for a, b in itertools.pairwise(elapsed)])
        by_shape.setdefault(shape_key(cfg, 1), []).append((epoch_s, wall - len(elapsed) * epoch_s))
    durations = []
    for cfg in plan:
        figures = by_shape[shape_key(cfg, 1)]
        epoch_s = statistics.median(f[0] for f in figures)
        overhead_s = statistics.median(f[1] for f in figures)
        durations.append(overhead_s + cfg.epochs * epoch_s)
    for cpus, at_once in ((2, 2), (3, 3), (64, 8)):
        est = dry_estimate(capsys, "--storage", str(storage), "--cluster", f"{cpus},0")["estimate"]
        assert est["slots"] == at_once and est["processes"] == len(plan) == est["trials_to_run"]
        assert est["wall_s"] == pytest.approx(SWEEP_FIXED_S + makespan(durations, at_once), abs=0.01)
        assert est["accelerator_hours"] == 0 and est["accelerator"] == "none (CPU only)"
        assert f"the curves of {storage / 'earlier'}" in est["basis"] and f"{cpus} CPUs" in est["basis"]
    assert sorted(p.name for p in storage.iterdir()) == ["earlier"], "a dry run writes nothing"


def test_a_dry_run_says_why_it_has_no_estimate_and_writes_nothing(tmp_path, capsys):
    storage = tmp_path / "runs"
    est = dry_estimate(capsys, "--storage", str(storage))["estimate"]
    assert set(est) >= {"wall_s", "accelerator_hours", "basis"}
    assert est["wall_s"] is None and est["accelerator_hours"] is None
    assert est["basis"].startswith("no estimate: no calibration or earlier study measured vit_c_tiny on digits at 8 px")
    assert "--calibrate" in est["basis"]
    assert not storage.exists()
    # a trial too big for the cluster given: the reason, not a refusal
    est = dry_estimate(capsys, "--storage", str(storage), "--cluster", "0.5,0")["estimate"]
    assert est["wall_s"] is None and "one trial needs 1 CPUs" in est["basis"]


def test_a_calibration_is_cached_in_the_storage_root_and_reused(tmp_path, capsys):
    storage = tmp_path / "runs"
    first = dry_estimate(capsys, "--storage", str(storage), "--calibrate", "--cluster", "2,0")["estimate"]
    assert first["wall_s"] > SWEEP_FIXED_S and "calibrated" in first["basis"]
    assert [p.name for p in storage.iterdir()] == [CACHE_DIR], "nothing in a study folder"
    cache = next((storage / CACHE_DIR).iterdir())
    record = json.loads(cache.read_text())
    spec = load_spec(TINY)
    shapes = {shape_key(g[0], len(g)) for g in processes(spec, plan_trials(spec))}
    assert set(record["figures"]) == shapes and record["machine"]["kind"] == "cpu"
    before = cache.stat().st_mtime_ns
    again = dry_estimate(capsys, "--storage", str(storage), "--calibrate", "--cluster", "2,0")["estimate"]
    assert again == first and cache.stat().st_mtime_ns == before, "a cached shape is not calibrated again"
    plain = dry_estimate(capsys, "--storage", str(storage), "--cluster", "2,0")["estimate"]
    assert plain == first
    # the figures are the calibration's: per process overhead + epochs x epoch_s, 2 at once
    plan = plan_trials(spec)
    figures = record["figures"]
    durations = [figures[shape_key(c, 1)]["overhead_s"] + c.epochs * figures[shape_key(c, 1)]["epoch_s"] for c in plan]
    assert first["wall_s"] == pytest.approx(SWEEP_FIXED_S + makespan(durations, 2), abs=0.01)


def test_slots_follow_resources_fused_groups_and_gpus():
    spec = load_spec("default")
    groups = processes(spec, plan_trials(spec))
    assert [len(g) for g in groups] == [8] * 8
    assert slots(spec, 2, 0, len(groups)) == 2 and slots(spec, 64, 0, len(groups)) == 8
    capped = spec.model_copy(update={"resources": spec.resources.model_copy(update={"max_concurrent": 3})})
    assert slots(capped, 64, 0, len(groups)) == 3
    paper = load_spec("paper_lr_wd")
    assert slots(paper, 72, 8, 1152) == 1  # 8 data-parallel workers of 8 CPUs and 1 GPU each per trial
    assert slots(paper, 64, 8, 1152) == 0  # ... plus the trial's own driver process (0.01 CPU)
    assert slots(paper, 1024, 64, 1152) == 8 and slots(paper, 1024, 7, 1152) == 0
    cifar = load_spec("cifar10_lr_wd")  # 4 trials per GPU, 2 CPUs each
    assert slots(cifar, 16, 1, 256) == 4 and slots(cifar, 4, 1, 256) == 2 and slots(cifar, 16, 0, 256) == 8
    assert makespan([3, 1, 1, 1], 2) == 3 and makespan([1, 1, 1, 1], 2) == 2 and makespan([], 4) == 0


def test_the_progress_eta_uses_the_estimate_from_the_first_trial_on():
    est = Estimate(100.0, 0.0, "test", slots=2, processes=2, process_share_s=[30.0, 30.0],
                   trial_process={"a": 0, "b": 0, "c": 1})
    progress = SweepProgress(total=3, already_done=0, estimate=est)
    assert progress.expected_s == 60.0
    assert 0 <= progress.eta_seconds() <= 60.0, "an ETA before any trial ended"
    progress.finished({"trial_id": "a", "status": "ok", "top1_err": 10.0, "model": "m", "optimizer": "o",
                       "lr": 1e-3, "weight_decay": 0.1})
    assert progress.done_share == 30.0
    progress.finished({"trial_id": "b", "status": "ok", "top1_err": 11.0, "model": "m", "optimizer": "o",
                       "lr": 1e-3, "weight_decay": 0.1})
    assert progress.done_share == 30.0, "a fused group counts once"
    progress.finished({"trial_id": "c", "status": "ok", "top1_err": 12.0, "model": "m", "optimizer": "o",
                       "lr": 1e-3, "weight_decay": 0.1})
    assert progress.eta_seconds() == 0.0


@pytest.mark.ray
def test_a_run_calibrates_on_the_trials_device_prints_the_estimate_and_caches_it(sweep, tmp_path, capsys):
    storage = tmp_path / "runs"
    out = sweep(TINY, "--storage", storage, "--set", "samples=1", "--calibrate")  # a CPU-only cluster calibrates when asked
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stderr.splitlines()
    line = next(x for x in lines if x.startswith("estimate: "))
    assert "calibrated now on cpu" in line and "wall" in line
    assert lines.index(line) < min(i for i, x in enumerate(lines) if x.startswith("[1/"))
    cache = list((storage / CACHE_DIR).iterdir())
    assert len(cache) == 1 and json.loads(cache[0].read_text())["figures"]
    # a dry run of the same shapes under another name reads the finished study's curves
    est = dry_estimate(capsys, "--storage", str(storage), "--set", "samples=1", "--set", "name=again")["estimate"]
    assert est["wall_s"] > 0 and f"curves of {storage / 'tiny'}" in est["basis"]


def test_a_data_parallel_trial_is_calibrated_as_one_worker_with_its_share_of_the_batch():
    from stability.train.calibrate import calibrate

    cfg = plan_trials(load_spec(TINY))[0]
    alone, shared = calibrate([cfg], "cpu", steps=2), calibrate([cfg], "cpu", steps=2, workers=2)
    assert alone["batch_size"] == 64 and shared["batch_size"] == 32 and shared["workers"] == 2
    assert 2 * alone["steps_per_epoch"] <= shared["steps_per_epoch"] <= 2 * alone["steps_per_epoch"] + 1
    assert shared["epoch_s"] == pytest.approx(shared["steps_per_epoch"] * shared["step_s"] / 2
                                              + shared["val_batches"] * shared["val_batch_s"])


def test_curves_of_other_shapes_are_no_figure(tmp_path, capsys):
    storage = tmp_path / "runs"
    write_earlier_study(storage, "bigger_batch", ("train.batch_size=32",))  # the same models, another recipe
    est = dry_estimate(capsys, "--storage", str(storage))["estimate"]
    assert est["wall_s"] is None and "batch 64" in est["basis"]


def test_the_run_calibrates_as_many_copies_at_once_as_trials_share_a_device():
    from stability.sweep.figures import mean_result, sharing

    default = load_spec("default")  # 8 fused groups, 1 CPU each: 2 at once on 2 CPUs
    cpu = {"cpus_per_worker": 1, "gpus_per_worker": 0.0, "workers_per_trial": 1}
    assert sharing(default, cpu, 2, 0, 8) == 2 and sharing(default, cpu, 64, 0, 8) == 8
    assert sharing(default, cpu, 2, 0, 1) == 1
    cifar = load_spec("cifar10_lr_wd")  # 4 trials per GPU
    gpu = {"cpus_per_worker": 2, "gpus_per_worker": 0.25, "workers_per_trial": 1}
    assert sharing(cifar, gpu, 16, 1, 256) == 4 and sharing(cifar, {**gpu, "gpus_per_worker": 1.0}, 64, 8, 256) == 1
    copies = ({"epoch_s": 1.0, "step_s": 0.1, "val_batch_s": 0.0, "overhead_s": 2.0, "wall_s": 3.0, "model": "m"},
              {"epoch_s": 3.0, "step_s": 0.3, "val_batch_s": 0.0, "overhead_s": 4.0, "wall_s": 5.0, "model": "m"})
    mean = mean_result(copies)
    assert mean["epoch_s"] == 2.0 and mean["overhead_s"] == 3.0 and mean["copies"] == 2 and mean["model"] == "m"
