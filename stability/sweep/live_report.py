"""`python -m stability.sweep ... --report`: the study's `report.html` rewritten while the trials run.

The store callback calls `LiveReport.changed` once a trial's row is stored (and once more when
`running.json` is emptied as Tune's run ends). A driver-side thread then starts
`python -m stability.report STUDY --out STUDY/report.html` as a separate process at a lower CPU
priority, at most once every `every` seconds and never two at once, so neither Tune's callback
loop nor the trials wait for it (and the sweep's process never imports the report's plotting);
changes that come while a report is due or running are drawn by the next one. The report
writes its page atomically (`stability.results.files`): a reader sees the old page or the new.

A report that fails never fails the sweep: the first failure is said on stderr in one line and
later reports are still tried. When the sweep ends, or is stopped by Ctrl-C or SIGTERM with
finished trials, one final report is written before the sweep exits: a report still running that
already shows every change is waited for instead, one that does not is interrupted first, so the
exit waits for one report's time at most. No report process outlives the sweep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

DEFAULT_EVERY_S = 30.0
NICENESS = 19  # the lowest CPU priority: Ray's trial workers run at 15 and keep the CPU they need
POLL_S = 0.1  # how often a waiting report process is checked for a cancellation
GRACE_S = 5.0  # an interrupted report's time to remove its temporary file before it is killed
QUICK_S = 1.0  # the same when the sweep itself is being stopped
THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class Schedule:
    """When the next report may start (pure: the caller gives the times). A change is a stored trial
    (or the end of the running trials); a report shows the changes made before it started."""

    def __init__(self, every: float):
        self.every = every
        self.changes = 0
        self.started = 0  # changes the last started report shows
        self.started_at: float | None = None
        self.completed: int | None = None  # changes the last report that ran to its end shows

    def change(self) -> None:
        self.changes += 1

    def delay(self, now: float) -> float | None:
        """Seconds until the next report may start: None while nothing changed since the last one
        started, 0 when it is due (at most one start per `every` seconds)."""
        if self.changes == self.started:
            return None
        if self.started_at is None:
            return 0.0
        return max(0.0, self.started_at + self.every - now)

    def start(self, now: float) -> int:
        """A report starts now; returns the changes it shows."""
        self.started, self.started_at = self.changes, now
        return self.started

    def ended(self, shows: int) -> None:
        """A report that showed `shows` changes ran to its end (written or failed, not interrupted)."""
        self.completed = shows

    def final_needed(self) -> bool:
        """At the end: no report that ran to its end shows every change (a failed one counts: the
        final one would fail the same way)."""
        return self.completed != self.changes


class Job(Protocol):
    """A running report."""

    def wait(self, timeout: float) -> int | None:
        """Its exit code, or None while it still runs after `timeout` seconds."""

    def stop(self, grace: float) -> None:
        """Interrupt it (it removes its temporary file), killing it after `grace` seconds."""

    def message(self) -> str:
        """The last line it wrote on stderr."""


def report_path(storage: str, study: str) -> str:
    """Where the report of `study` under `storage` (a folder or a URI, as shown) goes."""
    base, mark, query = storage.partition("?")
    return f"{base.rstrip('/')}/{study}/report.html{mark}{query}"


def report_command(root) -> tuple[list[str], dict[str, str]]:
    """The report of the study at `root`, written to `root/report.html`: the command, and the variables
    that carry the two locations. A URI may hold credentials, and a command line is readable by every
    user of the machine (`ps`), a process's environment by its owner only: the command names
    `env:STABILITY_REPORT_STUDY` and `env:STABILITY_REPORT_OUT`, which the report reads."""
    from stability.results.storage import full_uri

    where = {"STABILITY_REPORT_STUDY": full_uri(root), "STABILITY_REPORT_OUT": full_uri(root / "report.html")}
    return [sys.executable, "-m", "stability.report", "env:STABILITY_REPORT_STUDY", "--out",
            "env:STABILITY_REPORT_OUT"], where


class ReportJob:
    """A report process (`report_command`) in a session of its own (a Ctrl-C at the terminal is the
    sweep's to handle), at the lowest CPU priority and on one thread, its stderr kept in a file."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None):
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop or message)
        try:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._err,
                                         env={**os.environ, **{name: "1" for name in THREADS}, **(env or {})},
                                         start_new_session=True)
        except BaseException:
            self._err.close()
            raise
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, max(NICENESS, os.getpriority(os.PRIO_PROCESS, 0)))

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGINT)
            if self.wait(grace) is None:
                self.proc.kill()
                self.proc.wait()
        self._err.close()

    def message(self) -> str:
        try:
            self._err.seek(0, os.SEEK_END)
            self._err.seek(max(0, self._err.tell() - 4000))
            text = self._err.read().decode(errors="replace")
        except (OSError, ValueError):  # closed meanwhile
            return ""
        finally:
            self._err.close()
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else ""


class LiveReport:
    """Writes the report when `changed` says so, from a thread of its own (`start`); `finish`
    stops it and writes the final report. `start_job` starts one report (a `Job`); `clock` gives
    the time in seconds (tests give their own and call `wake` when they move it)."""

    def __init__(self, every: float, console, start_job: Callable[[], Job], clock: Callable[[], float] = time.monotonic):
        self.schedule = Schedule(every)
        self.clock = clock
        self.console = console
        self.start_job = start_job
        self.written = False  # the last report that ran to its end wrote the page
        self.warned = False
        self._cond = threading.Condition()
        self._cancel = threading.Event()
        self._closing = False
        self._job: Job | None = None
        self._inflight: int | None = None  # changes the running report shows
        self._thread = threading.Thread(target=self._loop, name="live-report", daemon=True)

    def __getstate__(self) -> dict:
        """Tune pickles its callbacks' state; a copy is inert (its changes start nothing)."""
        return {"every": self.schedule.every}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["every"], None, lambda: None)
        self._closing = True

    def start(self) -> LiveReport:
        self._thread.start()
        return self

    def wake(self) -> None:
        """Look at the clock again (it moved)."""
        with self._cond:
            self._cond.notify_all()

    def changed(self) -> None:
        """New results (a trial's row stored): a report is due once the interval allows."""
        with self._cond:
            self.schedule.change()
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closing and (delay := self.schedule.delay(self.clock())) != 0:
                    self._cond.wait(delay)
                if self._closing:
                    return
                shows = self._inflight = self.schedule.start(self.clock())
            self._run(shows)

    def _run(self, shows: int) -> None:
        """One report, waited for; a cancellation interrupts it (and it counts for nothing)."""
        try:
            job = self.start_job()
        except (OSError, ValueError, subprocess.SubprocessError) as exc:  # said like a failed report
            self._ended(shows, 1, f"it could not start: {exc}")
            return
        with self._cond:
            self._job = job
        code = None
        try:
            while code is None and not self._cancel.is_set():
                code = job.wait(POLL_S)
            if code is None:
                job.stop(GRACE_S)
        except BaseException:  # Ctrl-C or SIGTERM while the final report runs
            job.stop(QUICK_S)
            raise
        finally:
            with self._cond:
                self._job = self._inflight = None
        if code is not None:
            self._ended(shows, code, job.message())

    def _ended(self, shows: int, code: int, message: str) -> None:
        with self._cond:
            self.schedule.ended(shows)
            self.written = code == 0
        if code != 0 and not self.warned:
            self.warned = True
            detail = f"exit {code}" + (f": {message}" if message else "")
            self.console.print(f"warning: the live report failed ({detail}); the sweep goes on", markup=False,
                               highlight=False)

    def finish(self, final: bool) -> None:
        """Stop the thread. With `final`, make sure one report shows every change: a running report
        that does is waited for, one that does not is interrupted, and the final report is written
        here; without, a running report is interrupted and none is started. No report process is
        left behind, whatever interrupts this."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            if not final or (self._inflight is not None and self._inflight != self.schedule.changes):
                self._cancel.set()
        try:
            if self._thread.is_alive():
                self._thread.join()
            if final and self.schedule.final_needed():
                self._cancel.clear()
                self._run(self.schedule.start(self.clock()))
        except BaseException:
            self._cancel.set()
            with self._cond:
                job = self._job
            if job is not None:
                job.stop(QUICK_S)
            raise


@contextlib.contextmanager
def live_report(root, enabled: bool, every: float, console, has_results: Callable[[], bool]) -> Iterator[LiveReport | None]:
    """The sweep's live report of the study at `root` while the block runs (None unless `enabled`).
    The final report follows a block that ends, or is stopped (KeyboardInterrupt), when
    `has_results()`; any other error only stops a running report."""
    if not enabled:
        yield None
        return
    command, where = report_command(root)
    live = LiveReport(every, console, lambda: ReportJob(command, where)).start()
    ended = False
    try:
        yield live
        ended = True
    except KeyboardInterrupt:
        ended = True
        raise
    finally:
        live.finish(ended and _safely(has_results))


def _safely(test: Callable[[], bool]) -> bool:
    try:
        return bool(test())
    except (OSError, ValueError):  # an unreadable store (StoreError): not worth another error here
        return False

