"""The driver's store callback, in-process with fake Tune trials (as Ray's own callback tests do) and a
real study folder: what Tune reports becomes rows, curves, `running.json` and checkpoint clean-up."""

from __future__ import annotations

import math
from types import SimpleNamespace

from conftest import TESTS

from stability.results.store import ResultsStore, read_study
from stability.sampling import plan_trials
from stability.spec import load_spec
from stability.sweep.callbacks import FINAL, MEMBER, StoreCallback, group_key

TINY = str(TESTS / "data" / "tiny.yaml")


def fake_trial(index: int, error_file: str | None = None) -> SimpleNamespace:
    """What the callback reads of a Tune trial: its group in the config, and its error file."""
    return SimpleNamespace(config={"group": {"index": index}}, error_file=error_file)


def point(epoch: int, err: float) -> dict:
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "top1_err": err, "lr": 0.01, "elapsed_s": 2.0 * epoch}


def final(err: float, member: int = 0) -> dict:
    return {FINAL: True, MEMBER: member, "status": "ok", "top1_err": err, "best_top1_err": err, "train_loss": 0.5,
            "wall_time_s": 4.0, "images_per_s": 100.0, "params": 1000, "gflops": 0.01, "patch_cos_sim": 0.3,
            "patch_cos_sim_layers": [0.2, 0.3], "epochs_run": 2}


def test_reports_become_rows_curves_running_json_and_a_cleaned_checkpoint(tmp_path):
    plan = plan_trials(load_spec(TINY, ["samples=1", "train.mixup=0.0"]))
    groups = [plan[:2], [plan[2]], [plan[3]]]  # a fused group of two, then two lone trials
    store = ResultsStore(tmp_path / "tiny")
    (store.checkpoints_dir / group_key(groups[0])).mkdir(parents=True)
    rows, changes = [], []
    callback = StoreCallback("tiny", store, groups, rows.append, lambda: changes.append(1))
    group, lone = fake_trial(0), fake_trial(1, error_file=str(tmp_path / "error.txt"))
    (tmp_path / "error.txt").write_text("Traceback (most recent call last):\n  File ...\nValueError: depth 'broken'\n")

    for member in (0, 1):
        callback.on_trial_result(1, [], group, {MEMBER: member, FINAL: False, **point(1, 50.0 + member)})
    callback.on_trial_result(1, [], lone, {FINAL: False, **point(1, 70.0)})
    running = store.read_running()
    assert set(running) == {plan[0].trial_id, plan[1].trial_id, plan[2].trial_id}
    assert running[plan[1].trial_id]["epoch"] == 1 and running[plan[1].trial_id]["checkpoint"] == plan[0].trial_id

    callback.on_trial_result(2, [], group, {MEMBER: 0, FINAL: False, **point(2, 45.0)})
    callback.on_trial_result(2, [], group, {MEMBER: 0, FINAL: False, **point(2, 40.0)})  # a retry repeats epoch 2
    callback.on_trial_result(2, [], group, {MEMBER: 0, **final(40.0)})
    assert (store.checkpoints_dir / group_key(groups[0])).exists()  # member 1 is not stored yet
    callback.on_trial_result(2, [], group, {MEMBER: 1, FINAL: False, **point(2, 42.0)})
    callback.on_trial_result(2, [], group, final(42.0, member=1))
    assert not (store.checkpoints_dir / group_key(groups[0])).exists()  # every row of the group is stored
    callback.on_trial_error(3, [], lone)
    callback.on_trial_error(3, [], fake_trial(2))  # no error file (a lost node)
    assert store.read_running() == {} and len(changes) == 4

    result = read_study(store.root)
    trials = result.trials.set_index("trial_id")
    assert [row["trial_id"] for row in rows] == [c.trial_id for c in plan]
    assert trials.loc[plan[0].trial_id, "top1_err"] == 40.0 and trials.loc[plan[1].trial_id, "status"] == "ok"
    assert trials.loc[plan[2].trial_id, "error"] == "ValueError: depth 'broken'"
    assert trials.loc[plan[3].trial_id, "error"] == "trial failed (no error message recorded)"
    assert math.isnan(trials.loc[plan[2].trial_id, "top1_err"])
    curves = result.curves.sort_values(["trial_id", "epoch"])
    assert curves.groupby("trial_id")["epoch"].apply(list).to_dict() == \
        {plan[0].trial_id: [1, 2], plan[1].trial_id: [1, 2]}  # each epoch once; a failed trial keeps none
    first = curves[curves["trial_id"] == plan[0].trial_id]
    assert list(first["top1_err"]) == [50.0, 40.0]  # the retry's epoch 2 replaced the first one
