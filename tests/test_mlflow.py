"""MLflow (README, "Experiment trackers"): `--mlflow URI` logs from the sweep's driver one parent run
per study and one child run per trial, live as trials report; `python -m stability.report STUDY
--to-mlflow URI` exports a study the same way and adds no run the second time; without MLflow the
flags say how to get it; an unreachable tracking server costs no trial. Read back with MlflowClient
from a real SQLite tracking store."""

from __future__ import annotations

import functools
import os
import sys

import pandas as pd
import pytest

from conftest import REPO, TESTS, free_port, run_cli
from stability.results.store import read_study
from stability.sampling import plan_trials
from stability.spec import load_spec
from stability.tracking.runs import trial_params
from test_report import make_study

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

TINY = str(TESTS / "data" / "tiny.yaml")
SMALL = ["--set", "models=[vit_c_tiny]", "--set", "samples=1", "--set", "epochs=2"]  # 2 trials (adamw, sgd), 2 epochs


@functools.lru_cache(maxsize=None)
def client_of(uri: str) -> MlflowClient:
    return MlflowClient(uri)


def runs_of(uri: str, study: str) -> tuple[object, dict[str, object]]:
    """The study's parent run and its child runs by trial id (each trial id once)."""
    client = client_of(uri)
    experiment = client.get_experiment_by_name(study)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=10_000)
    parents = [r for r in runs if r.data.tags.get("stability.kind") == "study"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1  # every other run is a child of the study's run
    by_trial = {r.data.tags["trial_id"]: r for r in children}
    assert len(by_trial) == len(children)
    return parents[0], by_trial


def history(uri: str, run, key: str) -> list[tuple[int, float, int]]:
    return sorted((m.step, m.value, m.timestamp) for m in client_of(uri).get_metric_history(run.info.run_id, key))


def assert_matches_results(uri: str, root, study: str) -> dict[str, object]:
    """One child run per stored trial, with its tags, and per-epoch metrics equal to its curve."""
    res = read_study(root)
    parent, children = runs_of(uri, study)
    assert parent.data.tags["study"] == study
    assert set(children) == set(res.trials["trial_id"])
    for row in res.trials.to_dict(orient="records"):
        run = children[row["trial_id"]]
        tags = run.data.tags
        assert (tags["study"], tags["status"]) == (study, row["status"])
        assert tags["point"] == str(int(row["point"])) and tags["repeat"] == str(int(row["repeat"]))
        assert run.info.status == ("FAILED" if row["status"] == "failed" else "FINISHED")
        curve = res.curves[res.curves["trial_id"] == row["trial_id"]].sort_values("epoch")
        for key in ("train_loss", "top1_err", "lr"):
            logged = history(uri, run, key)
            expected = [(int(e), float(v)) for e, v in zip(curve["epoch"], curve[key]) if pd.notna(v)]
            assert [(s, pytest.approx(v)) for s, v, _ in logged] == expected, key
    return children


def test_report_exports_a_study_once(tmp_path):
    root = make_study(tmp_path / "runs", samples=3, epochs=(4,))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = run_cli("stability.report", str(root), "--to-mlflow", uri, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("synthetic: 13 run(s) added to MLflow experiment 'synthetic'")
    assert not (root / "report.html").exists()  # an export, not a page
    children = assert_matches_results(uri, root, "synthetic")
    run = children["vit_p_tiny-adamw-0-4"]
    assert run.data.params["model"] == "vit_p_tiny" and float(run.data.params["lr"]) > 0
    assert run.data.params["label_smoothing"] == "0.1"  # a knob column of a trial no saved plan names
    assert children["failed-0"].data.tags["error"].startswith("RuntimeError: CUDA out of memory")
    again = run_cli("stability.report", str(root), "--to-mlflow", uri, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "synthetic: 0 run(s) added" in again.stdout and "13 already there" in again.stdout
    assert set(runs_of(uri, "synthetic")[1]) == set(children)  # no run added
    for key in ("top1_err", "lr"):  # nor a metric
        assert len(history(uri, children["vit_c_tiny-sgd-2-4"], key)) == 4


def test_flags_without_mlflow_say_how_to_get_it_before_any_work(tmp_path):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "mlflow.py").write_text("raise ImportError(\"No module named 'mlflow'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden), str(REPO)]), "RAY_TMPDIR": str(tmp_path / "ray")}
    db = tmp_path / "mlflow.db"
    study = make_study(tmp_path / "study")
    for args in (["stability.sweep", TINY, "--storage", str(tmp_path / "runs"), "--mlflow", f"sqlite:///{db}"],
                 ["stability.report", str(study), "--to-mlflow", f"sqlite:///{db}"]):
        out = run_cli(*args, env=env, timeout=120)
        assert out.returncode == 2, out.stderr
        flag = "--mlflow" if "--mlflow" in args else "--to-mlflow"
        assert out.stderr == (f'error: {flag} needs MLflow, an optional extra: pip install "stability[mlflow]" '
                              f'(from a checkout: pip install ".[mlflow]")\n')
    assert not (tmp_path / "runs").exists() and not db.exists() and not (tmp_path / "ray").exists()


def test_report_to_an_unreachable_server_is_one_line(tmp_path):
    root = make_study(tmp_path / "runs", samples=1, failed=False)
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    out = run_cli("stability.report", str(root), "--to-mlflow", f"http://127.0.0.1:{free_port()}", env=env,
                  timeout=300)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --to-mlflow http://127.0.0.1:") and "Traceback" not in out.stderr


def test_a_resumed_sweep_reopens_its_runs_and_logs_each_epoch_once(tmp_path):
    """The driver's tracker as the store callback drives it: a copy Tune pickles sends nothing, a
    later sweep (a resume) finds the trial's run again, and an epoch a retry repeats is logged once."""
    import pickle

    from stability.sweep.tracking import LiveTracker

    cfg = plan_trials(load_spec(TINY))[0]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    said: list[str] = []
    points = [{"epoch": e, "train_loss": 2.0 / e, "top1_err": 60.0 / e, "lr": 1e-3 * e, "elapsed_s": e} for e in (1, 2)]
    first = LiveTracker(uri, "tiny", said.append)
    first.start()
    first.epoch(cfg, points[0])
    pickle.loads(pickle.dumps(first)).epoch(cfg, points[1])  # inert: nothing sent
    first.close(tmp_path, complete=False)  # the sweep was stopped
    assert runs_of(uri, "tiny")[1][cfg.trial_id].info.status == "KILLED"
    again = LiveTracker(uri, "tiny", said.append)
    again.start()
    again.epoch(cfg, points[0])  # the retry repeats epoch 1
    again.epoch(cfg, points[1])
    row = {"status": "ok", "point": cfg.point, "repeat": cfg.repeat, "error": ""}
    again.stored(cfg, row, points)
    assert said == []
    parent, children = runs_of(uri, "tiny")
    run = children[cfg.trial_id]
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "ok"
    assert run.data.params == trial_params(cfg)
    assert [(s, v) for s, v, _ in history(uri, run, "top1_err")] == [(1, 60.0), (2, 30.0)]
    assert parent.info.status == "RUNNING"  # until the sweep ends


@pytest.mark.ray
def test_sweep_logs_each_trial_live_from_the_driver(sweep, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = sweep(TINY, "--storage", tmp_path / "runs", *SMALL, "--mlflow", uri)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MLflow" not in out.stderr  # nothing to say: every request was served
    root = tmp_path / "runs" / "tiny"
    children = assert_matches_results(uri, root, "tiny")
    assert len(children) == 2
    plan = {cfg.trial_id: cfg for cfg in plan_trials(load_spec(TINY, [a for a in SMALL if a != "--set"]))}
    for trial_id, run in children.items():
        params = run.data.params
        assert params == trial_params(plan[trial_id])  # every knob of the trial's config
        assert {"lr", "weight_decay", "optimizer", "train.batch_size", "train.mixup", "dataset.name"} <= set(params)
        stamps = [t for _, _, t in history(uri, run, "top1_err")]
        assert stamps[0] < stamps[1]  # each epoch logged as it was reported, not all at the end
    parent, _ = runs_of(uri, "tiny")
    assert parent.info.status == "FINISHED"


@pytest.mark.ray
def test_an_unreachable_tracking_server_costs_no_trial(sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{free_port()}"
    out = sweep(TINY, "--storage", tmp_path / "runs", *SMALL, "--mlflow", uri)
    assert out.returncode == 0, out.stderr[-3000:]
    said = [line for line in out.stderr.splitlines() if "cannot log to MLflow" in line]
    assert len(said) == 1 and said[0].startswith(f"warning: --mlflow {uri}: ") and "goes on without it" in said[0]
    assert "Traceback" not in out.stderr
    trials = read_study(tmp_path / "runs" / "tiny").trials
    assert len(trials) == 2 and set(trials["status"]) <= {"ok", "diverged"}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
