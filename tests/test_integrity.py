"""Hostile input and store integrity: one writer per study folder (the lock), damaged result
files never trusted, a damaged study.yaml refused in one line, and `report --out` never
replacing a link or a special file."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO, TESTS, run_cli, wait_for
from stability.results import lock as lockmod
from stability.results.lock import LockHeld, StudyLock, identity
from stability.results.store import ResultsStore, StoreError, read_study
from stability.results.tables import TRIAL_KEYS, TableFile, check_file, table_files
from stability.sampling import plan_trials
from stability.spec import load_spec
from stability.sweep.__main__ import main as sweep_main
from test_report import make_study

TINY = str(TESTS / "data" / "tiny.yaml")
SMALL = ["--set", "models=[vit_c_tiny]", "--set", "samples=1", "--set", "epochs=1"]  # 2 one-epoch trials


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _write_lock(folder: Path, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    record = {**identity(), "since": time.time() - 5, "expires": time.time() + 60, "token": "someone", **fields}
    path = folder / ".lock"
    path.write_text(json.dumps(record) + "\n")
    return path


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


# --- the lock --------------------------------------------------------------------------------------


def test_the_lock_names_its_holder_and_refuses_a_second_writer(tmp_path):
    folder = tmp_path / "study"
    with StudyLock(folder) as held:
        record = json.loads((folder / ".lock").read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["start"] == lockmod.process_start(os.getpid()) and record["expires"] > time.time()
        assert record["token"] == held.token
        with pytest.raises(LockHeld) as info:
            StudyLock(folder).acquire()
        message = str(info.value)
        assert f"pid {os.getpid()} on host {socket.gethostname()} since " in message and "\n" not in message
    assert not (folder / ".lock").exists() and not (folder / ".lock.guard").exists()


@pytest.mark.parametrize("case", ["dead-pid", "reused-pid", "other-host-expired", "unreadable-and-old", "no-pid"])
def test_a_stale_lock_is_taken_over(tmp_path, case):
    folder = tmp_path / "study"
    if case == "dead-pid":
        path = _write_lock(folder, pid=_dead_pid(), start="1")
    elif case == "reused-pid":  # a live PID whose process started at another time than the holder did
        path = _write_lock(folder, start="1")
    elif case == "other-host-expired":
        path = _write_lock(folder, host="elsewhere", pid=1, expires=time.time() - 1)
    elif case == "no-pid":  # hand-made content is judged, never trusted to be well-formed
        path = _write_lock(folder, pid=-1, since="garbage")
    else:
        path = folder / ".lock"
        folder.mkdir()
        path.write_bytes(b"")
        old = time.time() - lockmod.LEASE_S - 5
        os.utime(path, (old, old))
    lock = StudyLock(folder).acquire()
    try:
        assert lock.took_over and json.loads(path.read_text())["token"] == lock.token
        why = {"dead-pid": "is gone", "reused-pid": "is another process now", "other-host-expired": "lease expired",
               "unreadable-and-old": "unreadable lock file", "no-pid": "names no process"}[case]
        assert why in lock.took_over
    finally:
        lock.release()
    assert not path.exists()


@pytest.mark.parametrize("case", ["live-pid-with-expired-lease", "other-host-in-lease", "unreadable-and-fresh"])
def test_a_live_lock_is_respected(tmp_path, case):
    folder = tmp_path / "study"
    if case == "live-pid-with-expired-lease":  # on one machine the PID decides, not the lease
        path = _write_lock(folder, expires=time.time() - 600)
    elif case == "other-host-in-lease":
        path = _write_lock(folder, host="elsewhere", pid=1, since="garbage")
    else:  # a lock being written (created, not yet filled)
        folder.mkdir()
        path = folder / ".lock"
        path.write_bytes(b"")
    before = path.read_bytes()
    with pytest.raises(LockHeld) as info:
        StudyLock(folder).acquire()
    expected = {"live-pid-with-expired-lease": f"pid {os.getpid()} on host", "other-host-in-lease": "on host elsewhere",
                "unreadable-and-fresh": "lock file being written"}[case]
    assert expected in str(info.value)
    if case == "other-host-in-lease":
        assert "since ?, lease until" in str(info.value)
    assert path.read_bytes() == before


def test_the_lease_is_renewed_and_a_taken_over_lock_is_reported_lost_and_left_alone(tmp_path):
    folder = tmp_path / "study"
    lost = []
    lock = StudyLock(folder, lease_s=0.4, on_lost=lost.append).acquire()
    try:
        first = json.loads((folder / ".lock").read_text())
        assert wait_for(lambda: json.loads((folder / ".lock").read_text())["expires"] > first["expires"], 5, 0.05)
        assert json.loads((folder / ".lock").read_text())["since"] == first["since"]
        (folder / ".lock").unlink()  # removed by hand: the live holder puts it back
        assert wait_for(lambda: (folder / ".lock").exists(), 5, 0.05)
        assert json.loads((folder / ".lock").read_text())["token"] == lock.token and not lost
        # another writer took the folder over (this one's lease lapsed, e.g. the machine slept)
        _write_lock(folder, host="elsewhere", pid=1, token="other")
        assert wait_for(lambda: lost, 5, 0.05)
        assert lost[0]["host"] == "elsewhere"
    finally:
        lock.release()
    assert json.loads((folder / ".lock").read_text())["token"] == "other", "never remove another writer's lock"


CONTENDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from stability.results.lock import LockHeld, StudyLock
    folder, go, done = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    while not go.exists():
        time.sleep(0.001)
    try:
        lock = StudyLock(folder).acquire()
    except LockHeld:
        print("refused", flush=True)
        sys.exit(0)
    print("took", flush=True)
    while not done.exists():
        time.sleep(0.01)
    lock.release()
""")


@pytest.mark.parametrize("start", ["fresh", "stale"])
def test_of_many_processes_racing_for_the_lock_exactly_one_wins(tmp_path, start):
    folder, go, done = tmp_path / "study", tmp_path / "go", tmp_path / "done"
    if start == "stale":  # all break the same dead holder's lock at once: still one winner
        _write_lock(folder, pid=_dead_pid(), start="1")
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(folder), str(go), str(done)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for _ in range(6)]
    try:
        time.sleep(1.5)  # every contender imported and waiting
        go.touch()
        # the refused ones exit at once; the winner holds the lock until `done`
        assert wait_for(lambda: sum(proc.poll() is not None for proc in procs) >= 5, timeout=30, every=0.05)
        done.touch()
        outcomes = [proc.communicate(timeout=30)[0].strip() for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert sorted(outcomes) == ["refused"] * 5 + ["took"], outcomes
    assert not (folder / ".lock").exists()


def test_a_second_sweep_of_the_study_is_refused_while_the_first_holds_it(tmp_path):
    """No Ray needed: the second sweep is refused before anything starts, and writes nothing."""
    storage = tmp_path / "runs"
    with StudyLock(storage / "tiny"):
        out = run_cli("stability.sweep", TINY, "--storage", str(storage), "--set", "seed=1", timeout=120)
        assert out.returncode == 2, out.stderr
        line = _one_line_error(out.stderr)
        assert f"{storage / 'tiny'} is in use by another sweep (pid {os.getpid()} on host {socket.gethostname()} since" in line
        assert sorted(p.name for p in (storage / "tiny").iterdir()) == [".lock"]
        dry = run_cli("stability.sweep", TINY, "--storage", str(storage), "--dry-run", timeout=120)
        assert dry.returncode == 0, dry.stderr  # a dry run takes no lock
    assert list((storage / "tiny").iterdir()) == []


def test_refused_input_after_the_lock_leaves_nothing(tmp_path, capsys):
    """The lock is taken before the spec is compared; a refusal then removes what the run created."""
    storage = tmp_path / "deep" / "runs"
    with pytest.raises(SystemExit) as info:
        sweep_main([TINY, "--storage", str(storage), "--set", "models=[vit_q_tiny]"])
    assert info.value.code == 2 and "unknown model" in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "deep").exists()
    (storage / "tiny").mkdir(parents=True)  # a folder that was there stays, without a lock
    with pytest.raises(SystemExit):
        sweep_main([TINY, "--storage", str(storage), "--set", "models=[vit_q_tiny]"])
    assert (storage / "tiny").is_dir() and list((storage / "tiny").iterdir()) == []


# --- study.yaml --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["not-yaml", "a-list", "empty", "no-spec", "binary", "a-folder", "python-tag"])
@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])
def test_a_damaged_study_yaml_is_one_line_exit_2(tmp_path, capsys, case, dry):
    folder = tmp_path / "runs" / "tiny"
    folder.mkdir(parents=True)
    saved = folder / "study.yaml"
    if case == "a-folder":
        saved.mkdir()
    else:
        saved.write_bytes({"not-yaml": b"spec: [unclosed\n", "a-list": b"- a\n- b\n", "empty": b"",
                           "no-spec": b"schema_version: 1\n", "binary": b"\xff\xfe\x00garbage",
                           "python-tag": b"spec: !!python/object/apply:os.system ['true']\n"}[case])
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(SystemExit) as info:
        sweep_main([TINY, "--storage", str(tmp_path / "runs"), *(["--dry-run"] if dry else [])])
    assert info.value.code == 2
    line = _one_line_error(capsys.readouterr().err)
    assert str(saved) in line
    assert sorted(p.name for p in folder.iterdir()) == before, "nothing written, no lock left"
    with pytest.raises(StoreError):
        ResultsStore(folder).read_spec()


def test_the_report_refuses_a_damaged_study_yaml_in_one_line(tmp_path):
    root = make_study(tmp_path, samples=2, failed=False)
    (root / "study.yaml").write_text("spec: [unclosed\n")
    out = run_cli("stability.report", str(root), "--out", str(tmp_path / "r.html"), timeout=120)
    assert out.returncode == 2 and "study.yaml" in _one_line_error(out.stderr)
    assert not (tmp_path / "r.html").exists()


# --- report --out --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("runs"), samples=2, failed=False)


def _report(study: Path, out, capsys) -> tuple[int, str]:
    from stability.report.__main__ import main as report_main

    try:
        code = report_main([str(study), "--out", str(out)])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("chain", [1, 2], ids=["link", "link-to-link"])
def test_report_writes_through_a_link_to_its_target(small_study, tmp_path, capsys, chain):
    target_dir = tmp_path / "elsewhere"
    target_dir.mkdir()
    target = target_dir / "report.html"
    target.write_text("old")
    link = tmp_path / "link.html"
    if chain == 2:
        (tmp_path / "middle.html").symlink_to(target)
        link.symlink_to(tmp_path / "middle.html")
    else:
        link.symlink_to(target)
    code, err = _report(small_study, link, capsys)
    assert code == 0, err
    assert link.is_symlink() and link.resolve() == target
    assert "<html" in target.read_text()[:1000]
    assert not [p for p in list(target_dir.iterdir()) + list(tmp_path.iterdir()) if p.name.startswith(".tmp")]


def test_report_through_a_dangling_link_creates_its_target(small_study, tmp_path, capsys):
    link = tmp_path / "link.html"
    link.symlink_to(tmp_path / "sub" / "new.html")
    code, err = _report(small_study, link, capsys)
    assert code == 0, err
    assert link.is_symlink() and (tmp_path / "sub" / "new.html").is_file()


@pytest.mark.parametrize("case", ["fifo", "link-to-fifo", "device", "socket", "folder", "unwritable", "under-a-file"])
def test_report_refuses_a_special_or_unwritable_out_in_one_line(small_study, tmp_path, capsys, case):
    path = tmp_path / "out.html"
    if case in ("fifo", "link-to-fifo"):
        os.mkfifo(tmp_path / "fifo")
        path = tmp_path / "fifo"
        if case == "link-to-fifo":
            (tmp_path / "link.html").symlink_to(path)
            path = tmp_path / "link.html"
    elif case == "device":
        path = Path("/dev/null")
    elif case == "socket":
        path = Path(f"/tmp/stability-test-{os.getpid()}.sock")  # a socket's path has a length limit
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
    elif case == "folder":
        path = tmp_path
    elif case == "unwritable":
        path = Path("/proc/stability-report.html")
    else:
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "r.html"
    try:
        mode = os.stat(path).st_mode if os.path.exists(path) else None
        code, err = _report(small_study, path, capsys)
        assert code == 2
        line = _one_line_error(err)
        assert str(path) in line
        fragment = {"fifo": "is a FIFO", "link-to-fifo": "is a FIFO", "device": "is a character device",
                    "socket": "is a socket", "folder": "is a folder", "unwritable": "cannot write a file in /proc",
                    "under-a-file": "not a folder"}[case]
        assert fragment in line
        if mode is not None:
            assert os.stat(path).st_mode == mode, "the special file is left as it was"
        if case == "link-to-fifo":
            assert path.is_symlink() and stat.S_ISFIFO(os.stat(path).st_mode)
    finally:
        if case == "socket":
            sock.close()
            path.unlink()
    assert not [p for p in tmp_path.rglob("*.html") if not p.is_symlink()], "nothing written"


# --- on a real cluster ------------------------------------------------------------------------------------


@pytest.mark.ray
def test_two_sweeps_of_one_study_at_once_only_one_runs(ray_cluster, tmp_path):
    """Two real drivers with different specs (seed 0 and 1) into one folder: one runs, the other is
    refused with the holder named; then a damaged trial file of the result is moved aside and re-run."""
    storage = tmp_path / "runs"
    base = [sys.executable, "-m", "stability.sweep", TINY, "--address", ray_cluster["address"],
            "--storage", str(storage), *SMALL]
    procs = [subprocess.Popen([*base, "--set", f"seed={seed}"], cwd=REPO, env=ray_cluster["env"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (0, 1)]
    try:
        results = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    codes = [proc.returncode for proc in procs]
    assert sorted(codes) == [0, 2], [err[-2000:] for _, err in results]
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    line = _one_line_error(results[loser][1])
    assert f"is in use by another sweep (pid {procs[winner].pid} on host {socket.gethostname()}" in line
    study = storage / "tiny"
    saved = ResultsStore(study).read_spec()["spec"]
    assert saved["seed"] == winner
    plan = {c.trial_id for c in plan_trials(load_spec(TINY, [s for s in SMALL if s != "--set"] + [f"seed={winner}"]))}
    trials = pd.read_parquet(study / "trials.parquet")
    assert set(trials["trial_id"]) == plan and len(trials) == 2
    assert not (study / ".lock").exists()

    victim = sorted((study / "trials.parquet").glob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])  # a torn file, as a full disk or a bad copy leaves it
    again = run_cli("stability.sweep", TINY, "--address", ray_cluster["address"], "--storage", str(storage), *SMALL,
                    "--set", f"seed={winner}", env=ray_cluster["env"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{victim} is damaged" in again.stderr and "1 of 2 trials already finished; running 1" in again.stderr
    assert len((study / "damaged" / "trials.parquet" / victim.name).read_bytes()) == 100
    assert check_file(TableFile(victim, 0.0), TRIAL_KEYS)[1] is None and len(pd.read_parquet(study / "trials.parquet")) == 2


@pytest.mark.ray
def test_a_killed_drivers_lock_does_not_block_an_immediate_resume(ray_cluster, tmp_path):
    storage = tmp_path / "runs"
    args = [sys.executable, "-m", "stability.sweep", TINY, "--address", ray_cluster["address"],
            "--storage", str(storage), *SMALL]
    driver = subprocess.Popen(args, cwd=REPO, env=ray_cluster["env"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    study = storage / "tiny"
    try:
        assert wait_for(lambda: (study / "study.yaml").is_file(), timeout=300)
    finally:
        driver.kill()  # SIGKILL: no chance to release the lock
        driver.wait()
    assert json.loads((study / ".lock").read_text())["pid"] == driver.pid
    out = run_cli("stability.sweep", TINY, "--address", ray_cluster["address"], "--storage", str(storage), *SMALL,
                  "--resume", env=ray_cluster["env"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"pid {driver.pid} on host {socket.gethostname()}" in out.stderr and "is gone" in out.stderr
    assert len(pd.read_parquet(study / "trials.parquet")) == 2 and not (study / ".lock").exists()
