"""Nothing in a study folder is trusted unchecked (issue 23, points 3, 4 and 6), without Ray: saved
fused groups are checked as new ones, an edited `study.yaml` is refused against the results beside
it, and the small cases (a `.lock` folder, a far-future lease, `--storage FILE --dry-run`, a reader
that leaves `--dry-run`'s pipe, Tune folders a kill -9 left)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from conftest import REPO, run_main
from stability.results import lock as lockmod
from stability.results.lock import LockHeld, StudyLock, identity
from stability.results.schema import failed_row
from stability.results.store import ResultsStore
from stability.sampling import plan_trials
from stability.spec import load_spec
from stability.sweep.__main__ import main as sweep_main

STUDY = """
name: trust
dataset: {name: digits, img_size: 8}
models: [vit_c_tiny, vit_p_tiny]
optimizers:
  adamw: {lr: {log_uniform: [1.0e-3, 4.0e-3]}, weight_decay: 0.05}
sampler: sobol
samples: 2
epochs: 2
seed: 0
train: {batch_size: 64, warmup_epochs: 1}
resources: {workers_per_trial: 1, cpus_per_worker: 1, fused_trials: 2, checkpoint_every: 1}
"""


def write_study(tmp_path, text: str = STUDY) -> str:
    path = tmp_path / "trust.yaml"
    path.write_text(text)
    return str(path)


def test_saved_groups_that_mix_models_or_do_not_hold_are_dropped_once_and_regrouped(tmp_path):
    from stability.sweep.run import fused_groups

    plan = plan_trials(load_spec(write_study(tmp_path)))
    c = [cfg for cfg in plan if cfg.model == "vit_c_tiny"]
    p = [cfg for cfg in plan if cfg.model == "vit_p_tiny"]
    said: list[str] = []
    saved = [[c[0].trial_id, p[0].trial_id],  # mixes models: never fusable
             [c[1].trial_id, c[1].trial_id],  # a trial twice
             [p[1].trial_id, "x", "y"],  # more members than fused_trials, unknown ids
             "not a group"]
    groups = fused_groups(plan, 2, saved, said.append)
    assert sorted(cfg.trial_id for g in groups for cfg in g) == sorted(cfg.trial_id for cfg in plan)  # each once
    assert all(len({cfg.model for cfg in g}) == 1 and len(g) <= 2 for g in groups)
    assert len(said) == 1 and said[0].startswith("groups.json: 3 saved fused group(s) dropped (fused trials may "
                                                 "differ only in lr, weight_decay and seed")
    kept = fused_groups(plan, 2, [[c[1].trial_id, c[0].trial_id]], said.append)  # a valid saved group is kept as it was
    assert [cfg.trial_id for cfg in kept[0]] == [c[1].trial_id, c[0].trial_id] and len(said) == 1


def test_first_key_difference_names_the_dotted_key():
    from stability.sweep.saved import first_key_difference

    a = {"name": "s", "optimizers": {"adamw": {"lr": {"log_uniform": [1e-3, 4e-3]}}}, "samples": 2}
    b = {"name": "s", "optimizers": {"adamw": {"lr": {"log_uniform": [1e-4, 4e-3]}}}, "samples": 2}
    assert first_key_difference(a, a) is None
    assert first_key_difference(a, b) == "optimizers.adamw.lr.log_uniform"
    assert first_key_difference(a, {**a, "epochs": 3}) == "epochs"


def stored_study(tmp_path) -> tuple[str, ResultsStore, list]:
    """A study folder whose every planned trial is stored (as failed rows: results all the same)."""
    study = write_study(tmp_path)
    spec = load_spec(study)
    store = ResultsStore(tmp_path / "runs" / spec.name)
    store.write_spec(spec, {})
    plan = plan_trials(spec)
    for cfg in plan:
        store.write_trial(failed_row(spec.name, cfg, "stored by the test"), [])
    return study, store, plan


def test_resume_after_study_yaml_was_edited_is_refused_naming_the_first_difference(tmp_path):
    study, store, plan = stored_study(tmp_path)
    record = yaml.safe_load(store.spec_path.read_text())
    record["spec"]["optimizers"]["adamw"]["lr"] = {"log_uniform": [1.0e-4, 4.0e-4]}  # the saved lr range edited
    store.spec_path.write_text(yaml.safe_dump(record, sort_keys=False))
    before = sorted(p.name for p in store.trials_dir.iterdir())
    out = run_main(sweep_main, study, "--storage", str(tmp_path / "runs"), "--resume")
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: {store.spec_path} does not match the results stored beside it: "
                               f"{len(plan)} of {len(plan)} are not in its plan (first: trial vit_c_tiny adamw point 0")
    assert "lr is 0.00" in lines[0] and "in the results" in lines[0] and "--set name=" in lines[0]
    assert f"it was changed after they were written (it differs from {study} in optimizers.adamw.lr.log_uniform)" \
        in lines[0]
    assert sorted(p.name for p in store.trials_dir.iterdir()) == before and not (store.root / ".lock").exists()


def test_resume_with_another_spec_runs_the_stored_plan_and_says_so(tmp_path):
    study, store, plan = stored_study(tmp_path)
    other = write_study(tmp_path, STUDY.replace("4.0e-3", "5.0e-3"))
    out = run_main(sweep_main, other, "--storage", str(tmp_path / "runs"), "--resume")
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"--resume: running the plan saved in {store.spec_path} (it differs from {other} in " \
           "optimizers.adamw.lr.log_uniform)" in out.stderr
    assert f"all {len(plan)} trials already finished" in out.stderr
    dry = run_main(sweep_main, other, "--storage", str(tmp_path / "runs"), "--resume", "--dry-run")
    assert dry.returncode == 0 and dry.stderr.startswith("--resume: running the plan saved in"), dry.stderr


def test_a_lock_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / "runs" / "default" / ".lock").mkdir(parents=True)
    out = run_main(sweep_main, "--storage", str(tmp_path / "runs"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("error: --storage: cannot lock") and "Traceback" not in out.stderr


def _other_host_lock(folder, expires: float, age_s: float):
    folder.mkdir(parents=True)
    path = folder / ".lock"
    path.write_text(json.dumps({**identity(), "host": "elsewhere", "pid": 1, "since": time.time() - age_s,
                                "expires": expires, "token": "theirs"}))
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_a_far_future_lease_from_another_host_blocks_at_most_one_lease(tmp_path):
    far = time.time() + 10 * 365 * 86400
    _other_host_lock(tmp_path / "fresh", far, age_s=1)
    with pytest.raises(LockHeld):  # written a second ago: its holder may be alive
        StudyLock(tmp_path / "fresh").acquire()
    _other_host_lock(tmp_path / "old", far, age_s=lockmod.LEASE_S + 5)
    lock = StudyLock(tmp_path / "old").acquire()
    try:
        assert lock.took_over and "lease not renewed for" in lock.took_over
    finally:
        lock.release()


def test_dry_run_refuses_a_file_as_storage_like_a_run(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for extra in ([], ["--dry-run"]):
        out = run_main(sweep_main, "--storage", str(afile), *extra)
        assert out.returncode == 2 and out.stdout == "", out.stderr
        assert out.stderr.strip().splitlines() == [f"error: --storage: cannot write to {afile} (needed for "
                                                   f"{afile}/default): not a folder; choose a writable folder"]
    assert afile.read_text() == "not a folder"


@pytest.mark.parametrize("args", [["--dry-run"], ["--dry-run", "--set", "samples=1"], ["--list"]])
def test_a_reader_that_leaves_the_pipe_gets_no_traceback(args):
    proc = subprocess.Popen([sys.executable, "-m", "stability.sweep", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # `| head -c 0`
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == ""


def test_tune_folders_of_ended_sweeps_are_removed_at_the_next_start(tmp_path, monkeypatch):
    from stability.sweep.run import remove_stale_tune_folders, tune_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    live = tune_folder()  # this process's: kept
    space = os.path.basename(live.name).split("-")[4]
    dead = tempfile.mkdtemp(prefix=f"stability-tune-999999999-1796649563.92-{space}-")  # a PID no process has
    reused = tempfile.mkdtemp(prefix=f"stability-tune-{os.getpid()}-1-{space}-")  # this PID, another start
    elsewhere = tempfile.mkdtemp(prefix=f"stability-tune-999999999-12-{space}9-")  # another PID namespace
    foreign = tempfile.mkdtemp(prefix="stability-tune-")  # not named by this version
    try:
        assert sorted(remove_stale_tune_folders()) == sorted([dead, reused])
        assert remove_stale_tune_folders() == []  # the live one is recognised as live
        assert all(os.path.isdir(p) for p in (live.name, elsewhere, foreign))
    finally:
        live.cleanup()
    assert not os.path.exists(live.name)


def _plant(folder, owner) -> None:
    folder.mkdir(parents=True)
    (folder / "state.pt").write_bytes(b"a state")
    if owner is not None:
        (folder / "owner.json").write_text(json.dumps(owner))


def test_the_driver_says_once_which_checkpoints_are_not_their_groups(tmp_path):
    from stability.sweep.saved import check_checkpoints
    from stability.train.owner import checkpoint_owner

    plan = plan_trials(load_spec(write_study(tmp_path)))
    groups = [[plan[0], plan[1]], [plan[2]], [plan[3]]]
    root = tmp_path / "checkpoints"
    _plant(root / plan[0].trial_id, checkpoint_owner([plan[0], plan[1]]))  # the group's own: used
    _plant(root / plan[2].trial_id, checkpoint_owner([plan[3]]))  # another trial's copy
    _plant(root / plan[3].trial_id, None)  # no owner record
    said: list[str] = []
    assert check_checkpoints(root, groups, said.append) == 2
    assert said == [f"checkpoint {root / plan[2].trial_id / 'state.pt'}: it belongs to trial {plan[3].trial_id}, not to "
                    f"trial {plan[2].trial_id}; ignored, the trial starts over",
                    f"checkpoint {root / plan[3].trial_id / 'state.pt'}: it names no owner; ignored, the trial starts over"]
    said.clear()
    assert check_checkpoints(root, [[plan[1], plan[0]]], said.append) == 0  # no checkpoint in its folder
    assert check_checkpoints(tmp_path / "absent", groups, said.append) == 0 and said == []
