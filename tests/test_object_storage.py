"""Results on an object store: `--storage s3://...` against a real S3-compatible server on localhost
(moto's server mode, started here as a subprocess and stopped by its PID): the storage layer, the
results store and its lock, mid-trial checkpoints, a swept study on Ray and its report read back."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from argparse import Namespace
from pathlib import Path

import pandas as pd
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest
from conftest import REPO, TESTS, command_lines_while, free_port, run_cli, run_main

from stability.results.lock import LockHeld, StudyLock, study_lock
from stability.results.object_lock import ObjectStudyLock
from stability.results.storage import ObjectPath, full_uri, location, public_query
from stability.results.store import ResultsStore, read_study
from stability.sweep.__main__ import main as sweep_main

pytest.importorskip("moto")

TINY = str(TESTS / "data" / "tiny.yaml")
BUCKET = "stability-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_REGION": "us-east-1"}


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server on a free localhost port with one bucket; yields its endpoint and the
    environment a client needs (dummy credentials). The server is stopped by its PID."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **CREDENTIALS})
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)  # for the pyarrow clients of this process
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("moto server did not start")
            time.sleep(0.2)
        endpoint = f"127.0.0.1:{port}"
        admin = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1",
                                  access_key="testing", secret_key="testing", allow_bucket_creation=True)
        admin.create_dir(BUCKET)
        yield {"endpoint": endpoint, "query": f"endpoint_override={endpoint}&scheme=http",
               "env": {**os.environ, **CREDENTIALS}, "fs": admin}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def uri(s3, *parts: str, user: str = "") -> str:
    """A prefix of the bucket as a URI with the endpoint (`user`: credentials written into it)."""
    return f"s3://{user}{BUCKET}/{'/'.join(parts) or uuid.uuid4().hex}?{s3['query']}"


def fresh(s3) -> str:
    return uri(s3, uuid.uuid4().hex)


# --- the storage layer ----------------------------------------------------------------------------

def test_location_keeps_local_paths_and_hides_query_secrets(tmp_path):
    assert location(str(tmp_path)) == tmp_path and isinstance(location("runs"), Path)
    assert location(f"file://{tmp_path}") == tmp_path  # a file:// URI is a local path
    assert public_query("endpoint_override=h:1&scheme=http&access_key=A&secret_key=B&session_token=C") == \
        "endpoint_override=h:1&scheme=http"


def test_object_path_reads_writes_lists_moves_and_deletes(s3):
    root = location(uri(s3, uuid.uuid4().hex, user="testing:testing@"))  # credentials written into the URI
    assert isinstance(root, ObjectPath)
    assert "testing" not in str(root) and str(root).startswith(f"s3://{BUCKET}/") and "endpoint_override" in str(root)
    assert full_uri(root).startswith(f"s3://testing:testing@{BUCKET}/") and location(full_uri(root)) == root
    assert full_uri(root / "a" / "b").startswith(f"s3://testing:testing@{BUCKET}/") and "/a/b?" in full_uri(root / "a" / "b")
    assert not root.exists() and root.files() == []
    (root / "a" / "x.parquet").write_bytes(b"one")
    (root / "a" / "y.txt").write_text("two")
    (root / "a" / "sub" / "z.parquet").write_bytes(b"three")
    assert root.is_dir() and (root / "a").is_dir() and (root / "a" / "x.parquet").is_file()
    assert [p.name for p in (root / "a").files()] == ["x.parquet", "y.txt"]  # files only, not recursive
    assert [p.name for p in (root / "a").glob("*.parquet")] == ["x.parquet"]
    assert (root / "a" / "y.txt").read_text() == "two"
    (root / "a" / "x.parquet").move(root / "b" / "x.parquet")
    assert not (root / "a" / "x.parquet").exists() and (root / "b" / "x.parquet").read_bytes() == b"one"
    with pytest.raises(FileNotFoundError):
        (root / "nothing").read_bytes()
    (root / "a").rmtree()
    assert not (root / "a" / "y.txt").exists() and not (root / "a" / "sub" / "z.parquet").exists()
    (root / "b" / "x.parquet").unlink()
    (root / "b" / "x.parquet").unlink(missing_ok=True)
    assert (root / "b").with_suffix(".json").name == "b.json" and (root / "t.pt").stem == "t"


def _row(study: str, trial_id: str, **extra) -> dict:
    return {"study": study, "trial_id": trial_id, "model": "vit_p_tiny", "optimizer": "adamw", "lr": 1e-3,
            "weight_decay": 0.05, "epochs": 2, "seed": 0, "batch_size": 64, "status": "ok", "top1_err": 12.5,
            "best_top1_err": 12.0, "train_loss": 0.4, **extra}


def test_store_on_object_storage_matches_a_local_store(s3, tmp_path):
    remote, local = ResultsStore(location(fresh(s3))), ResultsStore(tmp_path / "study")
    for store in (remote, local):
        for i in range(3):
            store.write_trial(_row("s", f"t{i}"), [{"epoch": e, "train_loss": 1.0 / e, "top1_err": 50.0 / e,
                                                     "lr": 0.1, "elapsed_s": float(e)} for e in (1, 2)])
        store.write_running({"t9": {"epoch": 1}})
        store.write_groups([["t0", "t1"]])
    assert remote.finished_ids() == local.finished_ids() == {"t0", "t1", "t2"}
    a, b = read_study(remote.root), read_study(str(local.root))
    pd.testing.assert_frame_equal(a.trials.sort_values("trial_id").reset_index(drop=True),
                                  b.trials.sort_values("trial_id").reset_index(drop=True))
    pd.testing.assert_frame_equal(a.curves.sort_values(["trial_id", "epoch"]).reset_index(drop=True),
                                  b.curves.sort_values(["trial_id", "epoch"]).reset_index(drop=True))
    assert remote.read_running() == {"t9": {"epoch": 1}} and remote.read_groups() == [["t0", "t1"]]
    assert not [p for p in remote.trials_dir.files() if p.name.startswith(".")]  # one PUT: no temporary names
    # any reader of the store's filesystem reads the table whole
    table = pads.dataset(remote.trials_dir.path, filesystem=remote.root.fs, format="parquet").to_table()
    assert sorted(table.column("trial_id").to_pylist()) == ["t0", "t1", "t2"]


def test_damaged_file_on_object_storage_is_moved_aside_and_skipped(s3, capsys):
    store = ResultsStore(location(fresh(s3)))
    store.write_trial(_row("s", "good"), [])
    (store.trials_dir / "bad.parquet").write_bytes(b"not parquet")
    assert read_study(store.root).skipped == [str(store.trials_dir / "bad.parquet")]
    assert store.finished_ids() == {"good"}
    err = capsys.readouterr().err
    assert "bad.parquet?" in err and "is damaged (" in err and "moved to" in err
    assert not (store.trials_dir / "bad.parquet").exists()
    assert (store.damaged_dir / "trials.parquet" / "bad.parquet").read_bytes() == b"not parquet"


def test_compaction_on_object_storage_reads_the_same_from_few_objects(s3):
    """`python -m stability.results compact URI`: a few objects instead of one per trial, the same rows;
    a table written as one object becomes a folder the sweep can add to."""
    from stability.results.__main__ import main as results_main
    from stability.results.tables import table_files

    root = location(fresh(s3))
    store = ResultsStore(root)
    for i in range(7):
        store.write_trial(_row("s", f"t{i}", top1_err=float(i)),
                          [{"epoch": e, "train_loss": 1.0, "top1_err": 9.0, "lr": 0.1, "elapsed_s": 1.0} for e in (1, 2)])
    before = read_study(root)
    assert results_main(["compact", full_uri(root), "--rows-per-file", "3"]) == 0
    names = [f.path.name for f in table_files(store.trials_dir)]
    assert len(names) == 3 and all(n.startswith("part-") for n in names) and len(table_files(store.curves_dir)) == 7
    after = read_study(root)
    for a, b, key in ((before.trials, after.trials, ["trial_id"]), (before.curves, after.curves, ["trial_id", "epoch"])):
        pd.testing.assert_frame_equal(a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True))
    assert store.finished_ids() == {f"t{i}" for i in range(7)} and not (root / ".lock").exists()

    single = ResultsStore(location(fresh(s3)))
    single.trials_dir.write_bytes(store.trials_dir.files()[0].read_bytes())  # trials.parquet as one object
    assert single.trials_dir.is_file() and len(read_study(single.root).trials) == 3
    assert results_main(["compact", full_uri(single.root)]) == 0
    assert single.trials_dir.is_dir() and len(read_study(single.root).trials) == 3
    single.check_layout()


def test_lock_on_object_storage_is_held_refused_and_released(s3):
    root = location(fresh(s3))
    lock = study_lock(root)
    assert isinstance(lock, ObjectStudyLock) and isinstance(study_lock(Path("/tmp/x")), StudyLock)
    with lock:
        holder = json.loads((root / ".lock").read_text())
        assert holder["pid"] == os.getpid() and holder["token"] == lock.token
        with pytest.raises(LockHeld, match="in use by another sweep"):
            study_lock(root).acquire()
        assert lock.renew()
    assert not (root / ".lock").exists()
    # a lock left by a process that is gone (same machine) is taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / ".lock").write_text(json.dumps({**json.loads(json.dumps(holder)), "pid": dead.pid, "token": "old"}))
    with study_lock(root) as again:
        assert again.took_over and "is gone" in again.took_over


def test_checkpoint_saved_loaded_and_deleted_through_a_uri(s3):
    import torch

    from stability.train.checkpoint import TrialCheckpoint

    folder = fresh(s3).replace("?", "/checkpoints/key?")
    checkpoint = TrialCheckpoint(folder)
    assert checkpoint.load() is None
    state = {"epoch": 3, "step": 42, "model": {"w": torch.arange(6.0).reshape(2, 3)}}
    checkpoint.save(state)
    loaded = TrialCheckpoint(folder).load()  # another process would build it from the same string
    assert loaded["epoch"] == 3 and loaded["step"] == 42 and torch.equal(loaded["model"]["w"], state["model"]["w"])
    checkpoint.path.write_bytes(b"truncated")
    assert checkpoint.load() is None  # a damaged checkpoint counts as none
    checkpoint.delete()
    assert not checkpoint.path.exists()


def test_report_of_a_running_study_says_how_many_are_running(s3):
    from stability.report.load import load
    from stability.report.sections import _header

    store = ResultsStore(location(fresh(s3)))
    store.write_trial(_row("s", "t0"), [{"epoch": 1, "train_loss": 1.0, "top1_err": 20.0, "lr": 0.1, "elapsed_s": 1.0}])
    store.write_running({"t0": {"epoch": 2}, "t1": {"epoch": 1}, "t2": {"epoch": 0}})  # t0's row is stored
    trials, _, records = load([full_uri(store.root)])
    assert records[0]["running"] == 2 and len(trials) == 1
    assert "2 still running" in _header(trials, records)[1][0]


# --- the command line -----------------------------------------------------------------------------

def test_sweep_refuses_a_missing_bucket_in_one_line(s3, tmp_path, monkeypatch):
    for name, value in {**s3["env"], "RAY_TMPDIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    out = run_main(sweep_main, TINY, "--storage", f"s3://no-such-bucket/runs?{s3['query']}")
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--storage: cannot write to s3://no-such-bucket/runs/tiny" in lines[0]
    assert "Traceback" not in out.stderr and not os.listdir(tmp_path)  # Ray was not started


def test_an_unreachable_object_store_is_one_line_for_dry_run_and_mid_run(s3, tmp_path, monkeypatch):
    """Nothing listens on the endpoint: the dry run's read of study.yaml fails in one line (exit 2),
    and the same real pyarrow error raised mid-run inside Tune's TuneError becomes that line too."""
    from ray.tune.error import TuneError

    from stability.cli import UsageError
    from stability.results.storage import location
    from stability.sweep.errors import storage_errors

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    planted = f"deadsecret{uuid.uuid4().hex[:12]}"  # credentials in the URI: no output of the failing run shows them
    dead = f"s3://deadkey:{planted}@bucket/runs?endpoint_override=http://127.0.0.1:{port}&scheme=http"
    for name, value in {**s3["env"], "RAY_TMPDIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    out = run_main(sweep_main, TINY, "--dry-run", "--storage", dead)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --storage: the object store failed:"), lines
    assert "Traceback" not in out.stderr and "--resume" in lines[0]
    assert planted not in out.stdout + out.stderr
    with pytest.raises(UsageError) as info:
        with storage_errors([TINY, "--storage", dead]):
            try:
                (location(dead) / "tiny" / "x.parquet").write_bytes(b"x")
            except OSError:
                raise TuneError("Traceback (most recent call last): ...")
    assert str(info.value).startswith("--storage: the object store failed: ") and "\n" not in str(info.value)
    assert planted not in str(info.value)  # the mid-run message and its resume command


def test_every_resume_command_hides_the_uris_secrets():
    """One helper builds the resume command: the sweep's own (interrupted, unfinished) and the one a
    storage error prints show --storage and --mlflow without user info or secret query parameters."""
    from stability.sweep.commands import resume_command
    from stability.sweep.errors import storage_message

    storage = "s3://KEY:SECRET@b/runs?endpoint_override=h:1&secret_key=S"
    args = Namespace(study="tiny.yaml", storage=storage, address=None, mlflow="http://u:TOKEN@mlflow:5000",
                     report=True)
    command = resume_command(args, "tiny")
    assert command == ("python -m stability.sweep tiny.yaml --storage 's3://b/runs?endpoint_override=h:1' "
                       "--mlflow http://mlflow:5000 --report --resume")
    failed = storage_message(OSError(28, "No space left on device"), ["tiny.yaml", "--storage", storage, "--mlflow",
                                                                       "http://u:TOKEN@mlflow:5000", "--report"])
    assert command in failed
    for secret in ("SECRET", "KEY", "secret_key", "TOKEN"):
        assert secret not in command and secret not in failed


def _files_holding(text: str, *folders) -> list[str]:
    """Every file under `folders` whose bytes hold `text` (logs, Tune's state files, sockets skipped)."""
    found = subprocess.run(["grep", "-rlaF", "-D", "skip", text, *map(str, folders)], capture_output=True, text=True)
    return found.stdout.split()


def test_no_credential_of_the_uri_or_the_environment_is_left_on_disk(s3, ray_cluster, tmp_path):
    """A sweep to S3, then its report from S3. Credentials in the storage URI's user info and in the
    AWS variables reach the trials (they checkpoint into the store) but no output, no file of Ray's
    session, Tune's folder or the temporary folder, and no command line of any process while the sweep
    and its live report run; the Tune folder is removed at the end, and one a kill -9 left is removed
    at the next start. What the sweep wrote reads back by pyarrow alone as the store reads it, and the
    report command it printed (no credentials: they come from the environment) draws it."""
    uri_secret, env_secret = f"urisecret{uuid.uuid4().hex[:12]}", f"envsecret{uuid.uuid4().hex[:12]}"
    storage = uri(s3, uuid.uuid4().hex, "runs", user=f"stabilitykey:{uri_secret}@")
    tmp = tmp_path / "tmp"
    space = "".join(c for c in os.readlink("/proc/self/ns/pid") if c.isdigit())
    stale = tmp / f"stability-tune-999999999-12-{space}-killed"  # named as a sweep's, whose process is gone
    (stale / "resume").mkdir(parents=True)
    env = {**ray_cluster["env"], **CREDENTIALS, "AWS_SECRET_ACCESS_KEY": env_secret, "TMPDIR": str(tmp)}
    driver = subprocess.Popen([sys.executable, "-m", "stability.sweep", TINY, "--address", ray_cluster["address"],
                               "--storage", storage, "--set", "samples=1", "--set", "resources.checkpoint_every=1",
                               "--set", "models=[vit_c_tiny]", "--report", "--report-every", "0.1"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # the driver's own command line holds the URI the user typed; no process it starts may
        command_lines = command_lines_while(driver)
        out = subprocess.CompletedProcess(driver.args, driver.returncode, *driver.communicate(timeout=60))
    finally:
        driver.kill()
    assert out.returncode == 0, out.stderr[-3000:]
    assert uri_secret not in out.stdout + out.stderr and env_secret not in out.stdout + out.stderr
    assert any("stability.report env:STABILITY_REPORT_STUDY" in line for line in command_lines)  # the live report
    assert any(line.startswith("ray::") for line in command_lines)  # the cluster's workers
    assert [line for line in command_lines if uri_secret in line or env_secret in line] == []
    assert list(tmp.iterdir()) == []  # this run's Tune folder and the stale one are gone
    assert _files_holding(uri_secret, ray_cluster["tmpdir"], tmp_path) == []
    assert _files_holding(env_secret, ray_cluster["tmpdir"], tmp_path) == []

    study = location(uri(s3, storage.split("/")[3], "runs", "tiny"))
    assert study.is_file() is False and (study / "study.yaml").is_file()
    assert "stabilitykey" not in (study / "study.yaml").read_text()
    assert not (study / ".lock").exists()  # released
    # the trials checkpointed into the store (the folder is left once its files are deleted), none locally
    assert (study / "checkpoints").exists() and not (REPO / "s3:").exists()
    assert not [p for p in study.fs.get_file_info(pafs.FileSelector(f"{study.path}/checkpoints", allow_not_found=True,
                                                                     recursive=True)) if p.type == pafs.FileType.File]
    # what was written, read by pyarrow alone
    written = pads.dataset(f"{study.path}/trials.parquet", filesystem=study.fs, format="parquet").to_table().to_pandas()
    curves = pads.dataset(f"{study.path}/curves.parquet", filesystem=study.fs, format="parquet").to_table().to_pandas()
    assert len(written) == 2 and len(curves) == 2 * len(written)  # 1 model x 2 optimizers x 1 point, 2 epochs
    result = read_study(full_uri(study))
    key = ["trial_id"]
    pd.testing.assert_frame_equal(result.trials.sort_values(key).reset_index(drop=True),
                                  written.sort_values(key).reset_index(drop=True), check_like=True)
    pd.testing.assert_frame_equal(result.curves.sort_values(["trial_id", "epoch"]).reset_index(drop=True),
                                  curves.sort_values(["trial_id", "epoch"]).reset_index(drop=True), check_like=True)
    page = tmp_path / "report.html"
    # the page the sweep named (no credentials in it: they come from the environment), then a report of its own
    shown = shlex.split(next(line for line in out.stderr.splitlines() if line.startswith("report: "))[8:])[-1]
    assert shown == str(study / "report.html") and "stabilitykey" not in shown
    shown = str(study)
    report = run_cli("stability.report", shown, "--json", "--out", str(page), env=s3["env"], timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    summary = json.loads(report.stdout)
    assert sum(g["n"] for g in summary["groups"]) == len(written)
    assert page.is_file() and "2 trials" in page.read_text()
    # without --out the page goes beside the results, into the store (one PUT), over the live report's
    study.fs.delete_file(f"{study.path}/report.html")
    again = run_cli("stability.report", shown, env=s3["env"], timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip() == str(study / "report.html") and "2 trials" in (study / "report.html").read_text()


def test_the_driver_finds_foreign_checkpoints_on_a_store_with_one_listing(s3):
    from stability.sampling import plan_trials
    from stability.spec import load_spec
    from stability.sweep.saved import check_checkpoints
    from stability.train.owner import checkpoint_owner

    plan = plan_trials(load_spec(TINY, ["samples=1"]))
    root = location(fresh(s3)) / "checkpoints"
    (root / plan[0].trial_id / "state.pt").write_bytes(b"a state")
    (root / plan[0].trial_id / "owner.json").write_text(json.dumps(checkpoint_owner([plan[1]])))
    (root / plan[1].trial_id / "state.pt").write_bytes(b"a state")
    (root / plan[1].trial_id / "owner.json").write_text(json.dumps(checkpoint_owner([plan[1]])))
    said: list[str] = []
    assert check_checkpoints(root, [[plan[0]], [plan[1]], [plan[2]]], said.append) == 1
    assert said == [f"checkpoint {root / plan[0].trial_id / 'state.pt'}: it belongs to trial {plan[1].trial_id}, not to "
                    f"trial {plan[0].trial_id}; ignored, the trial starts over"]
