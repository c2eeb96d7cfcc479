"""One writer per study folder: the lock names its holder, a stale lock (dead or reused PID, an
expired lease, an unreadable old file) is taken over at once, a live one is respected, the lease is
renewed, and of many racing processes exactly one wins. Also why the lock is not a library's."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import REPO, wait_for
from stability.results import lock as lockmod
from stability.results.lock import LockHeld, StudyLock, identity


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


KILLED_HOLDER = textwrap.dedent("""
    import sys, time
    from datetime import timedelta
    from flufl.lock import Lock
    Lock(sys.argv[1], lifetime=timedelta(seconds=60)).lock()
    print("locked", flush=True)
    time.sleep(600)
""")


def test_flufl_lock_keeps_a_killed_holders_lock(tmp_path):
    """Why the study lock is hand-written: flufl.lock (hard link + lifetime, the well-kept library for
    locks on shared file systems) keeps the lock of a holder killed with SIGKILL until its lifetime
    runs out, where the study lock is taken over at once (`test_a_stale_lock_is_taken_over[dead-pid]`,
    and `test_sweep.py::test_killed_driver_loses_nothing_its_lock_does_not_block_and_resume_completes`)."""
    flufl = pytest.importorskip("flufl.lock")
    path = str(tmp_path / "flufl.lock")
    holder = subprocess.Popen([sys.executable, "-c", KILLED_HOLDER, path], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with pytest.raises(flufl.TimeOutError):
        flufl.Lock(path, lifetime=timedelta(seconds=60)).lock(timeout=timedelta(seconds=1))
    folder = tmp_path / "study"  # the study lock of a killed holder on this machine: taken over at once
    dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    _write_lock(folder, pid=dead.pid, start=lockmod.process_start(os.getpid()))
    with StudyLock(folder) as lock:
        assert f"process {dead.pid} is gone" in lock.took_over
