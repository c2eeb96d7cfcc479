"""One writer per study folder: the lock file `<study>/.lock`.

The sweep takes it before it compares or writes `study.yaml` and holds it until it exits; a
second sweep of the same folder is refused (`LockHeld`, naming the holder). Why hand-written:
`fcntl` locks (and `filelock`) are unreliable or absent on the shared and FUSE file systems a
cluster's storage lives on and cannot say who holds them, and `flufl.lock` (hard link + lifetime)
takes a killed holder's lock over only when its lifetime runs out, so a killed driver would block
`--resume` for the whole lease (`tests/test_integrity.py::test_flufl_lock_keeps_a_killed_holders_lock`);
none works on object storage. Process facts come from `psutil`. So the lock is a small file:

    {"host": ..., "boot_id": ..., "pid_ns": ..., "pid": ..., "start": ..., "since": ...,
     "expires": ..., "token": ...}

created by a hard link from a written temporary file (exactly one creator wins, also over NFS v3+) and rewritten
atomically (temporary file + rename) when its lease is renewed. It is judged stale, and taken
over, when its holder is gone:
- on the same machine (same host name, boot id and PID namespace): the holder's PID is dead or a
  zombie, or now belongs to another process (its start time differs, `psutil`). A
  live holder keeps the lock whatever its lease says; a killed driver's lock never blocks an
  immediate `--resume`.
- from another machine (PIDs mean nothing there): its lease has expired, or the file was not
  rewritten for `LEASE_S` seconds (whatever expiry it claims: a far-future one blocks nobody). The
  live holder renews the lease every `LEASE_S / 4` seconds from a daemon thread, so a driver killed
  elsewhere blocks the folder for at most `LEASE_S` seconds; the clocks of the machines must agree
  to well within that (NTP does).
- a lock file that cannot be parsed (a crash between its creation and its one write) is stale
  once it is older than `LEASE_S`.
Breaking a stale lock, renewing and releasing each happen under a short-lived guard file
(`.lock.guard`, O_EXCL) so that two sweeps breaking the same stale lock cannot both win, and a
holder never overwrites a lock that was taken over from it. The lock is advisory: it binds the
commands of this package, not other programs writing into the folder.

On an object store (`--storage s3://...`, `object_lock.ObjectStudyLock`) there is neither a hard link nor an
O_EXCL create: the lock file is read, written in one PUT when absent or stale, and read back to
see whose it is; two sweeps starting within the same moment can both believe they hold it until
the loser's next renewal (within `LEASE_S / 4`) finds the other's token and stops it. It is
advisory there in a weaker sense: it keeps a second sweep out once the first is running, but it
cannot make two exactly simultaneous starts exclusive. `study_lock` picks the kind by location.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

from stability.results.files import atomic_write_bytes
from stability.results.storage import ObjectPath, location

LOCK_NAME = ".lock"
GUARD_NAME = ".lock.guard"
LEASE_S = 60.0  # a lock whose holder is on another machine and stops renewing is stale after this
GUARD_STALE_S = 10.0  # a guard is held for microseconds; one this old was left by a crash
GUARD_WAIT_S = 15.0  # longer than GUARD_STALE_S: a waiter outlives a crashed guard holder


class LockHeld(Exception):
    """The study folder is locked by a live writer; the message names it in one line."""

    def __init__(self, path: Path, holder: dict[str, Any] | None):
        self.path = path
        self.holder = holder
        super().__init__(f"{path.parent} is in use by another sweep ({describe(holder)}; lock file {path}); wait for "
                         f"it to end or stop it (a stopped sweep's lock is taken over by the next run)")


def describe(holder: dict[str, Any] | None) -> str:
    """'pid 123 on host h since 2024-05-01 12:00:00' (plus the lease end for another machine's holder)."""
    if not holder:
        return "lock file being written"
    text = f"pid {holder.get('pid')} on host {holder.get('host')} since {_clock(holder.get('since'), '%Y-%m-%d %H:%M:%S')}"
    if not _same_machine(holder, identity()):
        text += f", lease until {_clock(holder.get('expires'), '%H:%M:%S')}"
    return text


def _clock(value: Any, form: str) -> str:
    """A time stamp of a lock file as local time ('?' when it is not one: the file may be anyone's)."""
    try:
        return time.strftime(form, time.localtime(float(value)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _read_first_line(path: str) -> str:
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """The start time of process `pid` (seconds since the epoch, to the 1/100 s the kernel keeps), or
    None when it cannot be told. With the PID it names one process for the machine's uptime."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.Error, OSError, OverflowError, ValueError):
        return None


def identity() -> dict[str, Any]:
    """This process as a lock file names it (without the times and token)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot_id": _read_first_line("/proc/sys/kernel/random/boot_id"),
            "pid_ns": _pid_namespace(), "pid": pid, "start": process_start(pid)}


def _same_machine(holder: dict[str, Any], me: dict[str, Any]) -> bool:
    """Same host, same boot and same PID namespace: the holder's PID can be checked here."""
    return all(holder.get(k) == me[k] for k in ("host", "boot_id", "pid_ns"))


def process_state(pid: int) -> str | None:
    """'alive', 'dead' (absent or a zombie) or None where it cannot be told."""
    try:
        status = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return "dead"
    except psutil.AccessDenied:  # another user's live process
        return "alive"
    except (psutil.Error, OSError, OverflowError, ValueError):
        return None
    return "dead" if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD) else "alive"


def stale_reason(holder: dict[str, Any] | None, age_s: float, me: dict[str, Any], now: float) -> str | None:
    """Why the lock of `holder` (None: unparseable content; `age_s`: the file's age) is stale, or None
    when it is live. See the module docstring for the rules."""
    if holder is None:
        return f"unreadable lock file older than {LEASE_S:g} s" if age_s > LEASE_S else None
    if _same_machine(holder, me):
        pid = holder.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return "lock file names no process"
        state = process_state(pid)
        if state == "dead":
            return f"process {pid} is gone"
        if state == "alive":
            start = process_start(pid)
            if start is not None and holder.get("start") is not None and start != holder.get("start"):
                return f"process {pid} is another process now"
            return None
    if age_s > LEASE_S:  # a live holder rewrites it every lease_s / 4: no lease runs longer, whatever it claims
        return f"lease not renewed for {age_s:.0f} s"
    try:
        expires = float(holder["expires"])
    except (KeyError, TypeError, ValueError):
        return "lock file has no lease"
    return f"lease expired at {_clock(expires, '%H:%M:%S')}" if not expires >= now else None  # NaN: expired


@dataclass(frozen=True)
class Found:
    """A lock file as read: its holder (None when unparseable), its age, and what tells this very
    file from a later one (inode, modification time, bytes)."""

    holder: dict[str, Any] | None
    age_s: float
    key: tuple


def read_lock(path: Path) -> Found | None:
    """The lock file at `path`, or None when there is none."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read(65536)
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(data)
    except ValueError:
        holder = None
    return Found(holder if isinstance(holder, dict) else None, time.time() - st.st_mtime,
                 (st.st_dev, st.st_ino, st.st_mtime_ns, data))


@contextlib.contextmanager
def _guard(folder: Path, wait_s: float = GUARD_WAIT_S) -> Iterator[None]:
    """Serialises the read-judge-write steps on one lock (break, renew, release). Held for microseconds;
    a guard older than GUARD_STALE_S was left by a crash and is removed."""
    path = folder / GUARD_NAME
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.close(fd)
            break
        except FileExistsError:
            try:
                if time.time() - path.stat().st_mtime > GUARD_STALE_S:
                    path.unlink(missing_ok=True)
                    continue
            except FileNotFoundError:
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path}: held for more than {wait_s:g} s") from None
            time.sleep(0.01)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


@dataclass
class StudyLock:
    """The lock of one study folder. `acquire()` raises LockHeld while a live writer holds it;
    `release()` (or leaving the `with` block) removes it if it is still ours. `on_lost` is called
    (from the renewal thread) when the lock was taken over by another writer after this one's lease
    lapsed (e.g. the machine slept): this writer must stop."""

    folder: Path
    lease_s: float = LEASE_S
    on_lost: Callable[[dict[str, Any] | None], None] | None = None

    def __post_init__(self) -> None:
        self.folder = self.folder if isinstance(self.folder, ObjectPath) else Path(self.folder)
        self.path = self.folder / LOCK_NAME
        self.token: str | None = None
        self.took_over: str | None = None  # why the lock found was stale, when one was taken over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> Found | None:
        return read_lock(self.path)

    def _guarded(self):
        return _guard(self.folder)

    def _unlink(self) -> None:
        self.path.unlink(missing_ok=True)

    def _record(self, since: float) -> bytes:
        now = time.time()
        record = {**identity(), "since": since, "expires": now + self.lease_s, "token": self.token}
        return (json.dumps(record) + "\n").encode()

    def _create(self) -> bool:
        """Create the lock with its content in one step: the record is written to a temporary file
        that is then hard-linked to the lock's name (link fails if the name exists), so no reader
        ever sees a lock without its holder."""
        since = time.time()
        fd, tmp = tempfile.mkstemp(prefix=".lock-", dir=self.folder)
        try:
            os.write(fd, self._record(since))  # one write of a few hundred bytes
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.chmod(tmp, 0o644)
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        finally:
            if fd >= 0:
                os.close(fd)
            Path(tmp).unlink(missing_ok=True)
        self._since = since
        return True

    def acquire(self) -> "StudyLock":
        try:
            return self._acquire()
        except BaseException:
            self.token = None  # nothing of ours to release: one message, the caller's
            raise

    def _acquire(self) -> "StudyLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.token = uuid.uuid4().hex
        me = identity()
        for _ in range(100):  # each round either creates the lock, refuses, or removes a stale one
            if self._create():
                self._start_renewing()
                return self
            found = self._read()
            if found is None:
                continue  # released meanwhile
            reason = stale_reason(found.holder, found.age_s, me, time.time())
            if reason is None:
                raise LockHeld(self.path, found.holder)
            with self._guarded():
                again = self._read()  # only the very file judged stale is removed, never a newer one
                if again is not None and again.key == found.key:
                    self._unlink()
                    self.took_over = f"{describe(found.holder)}: {reason}"
        raise TimeoutError(f"{self.path}: could not be taken")  # a bug: the rounds above always end

    def _start_renewing(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="study-lock-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                if not self.renew():
                    self._stop.set()
                    if self.on_lost is not None:
                        found = self._read()
                        self.on_lost(found.holder if found else None)
                    return
            except Exception as exc:  # a passing storage error: the next round tries again
                print(f"warning: could not renew {self.path}: {exc}", file=sys.stderr)

    def _ours(self, found: Found | None) -> bool:
        return found is not None and found.holder is not None and found.holder.get("token") == self.token

    def renew(self) -> bool:
        """Extend the lease; False when the lock is another writer's now. A lock file removed by hand is
        created again (when no other writer got there first)."""
        with self._guarded():
            found = self._read()
            if found is None:
                return self._create()
            if not self._ours(found):
                return False
            atomic_write_bytes(self.path, self._record(self._since))
            return True

    def release(self) -> None:
        """Stop renewing and remove the lock file if it is still ours (never another writer's)."""
        if self.token is None:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=GUARD_WAIT_S + 5)
        try:
            with self._guarded():
                if self._ours(self._read()):
                    self._unlink()
        except (OSError, TimeoutError) as exc:  # the next run takes a stale lock over anyway
            print(f"warning: could not remove {self.path}: {exc}", file=sys.stderr)
        self.token = None

    def __enter__(self) -> "StudyLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def study_lock(folder, lease_s: float = LEASE_S, on_lost: Callable[[dict[str, Any] | None], None] | None = None) -> StudyLock:
    """The lock of a study folder: `StudyLock` on a local path, `ObjectStudyLock` on an object store."""
    folder = location(folder)
    if isinstance(folder, ObjectPath):
        from stability.results.object_lock import ObjectStudyLock

        return ObjectStudyLock(folder, lease_s, on_lost)
    return StudyLock(folder, lease_s, on_lost)
