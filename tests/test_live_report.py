"""`python -m stability.sweep --report`: the report rewritten while a study runs. The schedule and the
report thread, tested with fake report jobs and a clock the test moves (no Ray, no report process);
the real processes and a real sweep are in test_live_report_processes.py."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import TESTS, wait_for
from rich.console import Console

from stability.sweep import live_report as lr
from stability.sweep.live_report import (
    LiveReport,
    Schedule,
    live_report,
)

TINY = str(TESTS / "data" / "tiny.yaml")


# --- the schedule (pure) --------------------------------------------------------------------------

def test_schedule_waits_for_a_change_then_starts_at_most_once_per_interval():
    s = Schedule(every=30)
    assert s.delay(now=0) is None  # nothing stored yet: no report
    s.change()
    assert s.delay(now=5) == 0  # the first change: at once
    assert s.start(now=5) == 1
    assert s.delay(now=6) is None  # nothing new since it started
    s.change()
    assert s.delay(now=6) == pytest.approx(29)  # new results, but the interval runs from the last start
    assert s.delay(now=34.9) == pytest.approx(0.1)
    assert s.delay(now=35) == 0 and s.delay(now=100) == 0


def test_schedule_coalesces_changes_into_one_report_that_shows_them_all():
    s = Schedule(every=10)
    s.change()
    s.start(now=0)
    for _ in range(7):  # seven trials stored while the first report runs and the interval passes
        s.change()
    assert s.delay(now=10) == 0
    assert s.start(now=10) == 8  # one report for all of them
    assert s.delay(now=10) is None


def test_schedule_says_when_a_final_report_is_needed():
    s = Schedule(every=10)
    assert s.final_needed()  # no report yet (e.g. a study whose trials had all finished before)
    s.change()
    shows = s.start(now=0)
    assert s.final_needed()  # started, not ended
    s.ended(shows)
    assert not s.final_needed()  # the last report shows everything
    s.change()
    assert s.final_needed()


# --- the report thread, with fake jobs -------------------------------------------------------------

class FakeJob:
    """A report that takes `duration` seconds (or until stopped) and exits with `code`."""

    def __init__(self, log: list, lock: threading.Lock, duration: float = 0.05, code: int = 0, message: str = ""):
        self.log, self.lock, self.duration, self.code, self._message = log, lock, duration, code, message
        self.start, self.end, self.stopped = time.monotonic(), None, False
        with lock:
            self.overlapped = any(job.end is None for job in log)  # another report still running
            log.append(self)

    def wait(self, timeout: float) -> int | None:
        left = self.start + self.duration - time.monotonic()
        if left > timeout:
            time.sleep(timeout)
            return None
        time.sleep(max(0.0, left))
        with self.lock:
            self.end = self.end or time.monotonic()
        return self.code

    def stop(self, grace: float) -> None:
        self.stopped = True
        with self.lock:
            self.end = self.end or time.monotonic()

    def message(self) -> str:
        return self._message


def _live(every: float, **job) -> tuple[LiveReport, list[FakeJob], io.StringIO]:
    log: list[FakeJob] = []
    lock = threading.Lock()
    err = io.StringIO()
    live = LiveReport(every, Console(file=err, width=300), lambda: FakeJob(log, lock, **job))
    return live.start(), log, err


class FakeClock:
    """The time a test moves by hand; moving it wakes the report thread."""

    def __init__(self):
        self.now, self.live = 0.0, None

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.live.wake()


class ManualJob:
    """A report that runs until the test ends it (`end`) or the live report stops it."""

    def __init__(self, log: list):
        self.done, self.stopped, self.ended = threading.Event(), False, False
        self.overlapped = any(not job.ended for job in log)  # another report still running
        log.append(self)

    def end(self) -> None:
        self.done.set()

    def wait(self, timeout: float) -> int | None:
        if self.done.wait(timeout):
            self.ended = True
            return 0
        return None

    def stop(self, grace: float) -> None:
        self.stopped = self.ended = True
        self.done.set()

    def message(self) -> str:
        return ""


def _manual(every: float) -> tuple[LiveReport, list[ManualJob], FakeClock]:
    log: list[ManualJob] = []
    clock = FakeClock()
    live = LiveReport(every, Console(file=io.StringIO()), lambda: ManualJob(log), clock=clock)
    clock.live = live
    return live.start(), log, clock


def _settle() -> None:
    """Time for the report thread to act on what it was told (for checks that nothing started)."""
    time.sleep(0.2)


def _finish(live: LiveReport, final: bool) -> threading.Thread:
    thread = threading.Thread(target=live.finish, kwargs={"final": final}, daemon=True)
    thread.start()
    return thread


def test_triggers_coalesce_at_most_one_report_per_interval_never_two_at_once():
    live, log, clock = _manual(every=30)
    live.changed()
    assert wait_for(lambda: len(log) == 1, timeout=30, every=0.01)  # the first change: a report at once
    for _ in range(50):  # trials stored while it runs
        live.changed()
    clock.advance(40)  # the interval passed while the first report still runs
    _settle()
    assert len(log) == 1, "never two reports at once"
    log[0].end()
    assert wait_for(lambda: len(log) == 2, timeout=30, every=0.01)  # due: it starts as the first ends
    assert live.schedule.started == 51, "one report for every change made meanwhile"
    log[1].end()
    assert wait_for(lambda: log[1].ended, timeout=30, every=0.01)
    live.changed()
    clock.advance(29)  # within the interval from the last start
    _settle()
    assert len(log) == 2
    clock.advance(1)
    assert wait_for(lambda: len(log) == 3, timeout=30, every=0.01)
    log[2].end()
    _finish(live, final=True).join(30)
    assert len(log) == 3 and live.written and live.schedule.completed == live.schedule.changes == 52
    assert not any(job.overlapped for job in log)


def test_no_change_no_report_and_a_report_is_due_at_once_after_a_quiet_spell():
    live, log, clock = _manual(every=30)
    clock.advance(100)
    _settle()
    assert log == []  # nothing stored: nothing to draw
    live.changed()
    assert wait_for(lambda: len(log) == 1, timeout=30, every=0.01)
    log[0].end()
    clock.advance(60)
    _settle()
    assert len(log) == 1  # still nothing new
    live.changed()  # the clock stands still: only a report due at once can start now
    assert wait_for(lambda: len(log) == 2, timeout=30, every=0.01)
    log[1].end()
    _finish(live, final=True).join(30)
    assert len(log) == 2  # the last report showed every change: no final one


def test_finish_waits_for_a_running_report_that_shows_everything():
    live, log, _ = _manual(every=30)
    live.changed()
    assert wait_for(lambda: log, timeout=30, every=0.01)
    finishing = _finish(live, final=True)
    _settle()
    assert finishing.is_alive(), "it waits for the running report"
    log[0].end()
    finishing.join(30)
    assert not finishing.is_alive() and len(log) == 1 and not log[0].stopped and live.written


def test_finish_interrupts_a_stale_report_then_writes_the_final_one():
    live, log, _ = _manual(every=30)
    live.changed()
    assert wait_for(lambda: log, timeout=30, every=0.01)
    live.changed()  # a trial stored after the running report started
    finishing = _finish(live, final=True)
    assert wait_for(lambda: len(log) == 2, timeout=30, every=0.01)  # the first never ends by itself
    log[1].end()
    finishing.join(30)
    assert not finishing.is_alive() and [job.stopped for job in log] == [True, False]
    assert live.schedule.completed == live.schedule.changes == 2


def test_finish_without_final_only_stops_the_running_report():
    live, log, _ = _manual(every=30)
    live.changed()
    assert wait_for(lambda: log, timeout=30, every=0.01)
    _finish(live, final=False).join(30)  # the report never ends by itself: returning means it was stopped
    assert len(log) == 1 and log[0].stopped


def test_failed_reports_are_said_once_and_the_block_goes_on(monkeypatch):
    """Every report fails (exit 2): the sweep's block runs to its end, stderr gets one line."""
    log: list[FakeJob] = []
    lock = threading.Lock()
    monkeypatch.setattr(lr, "ReportJob", lambda command, where: FakeJob(log, lock, code=2, message="error: no trials"))
    err = io.StringIO()
    with live_report(Path("study"), True, 0.05, Console(file=err, width=300), lambda: True) as live:
        for n in range(1, 4):
            live.changed()
            assert wait_for(lambda n=n: len(log) >= n, timeout=5, every=0.01)
            time.sleep(0.1)
    assert len(log) >= 3 and not live.written
    assert err.getvalue().splitlines() == ["warning: the live report failed (exit 2: error: no trials); the sweep goes on"]


def test_a_stopped_block_gets_its_final_report_before_the_interrupt_goes_on(monkeypatch):
    log: list[FakeJob] = []
    lock = threading.Lock()
    monkeypatch.setattr(lr, "ReportJob", lambda command, where: FakeJob(log, lock))
    with (pytest.raises(KeyboardInterrupt),
          live_report(Path("study"), True, 60, Console(file=io.StringIO()), lambda: True) as live):
        live.changed()
        assert wait_for(lambda: log and log[0].end is not None, timeout=5, every=0.01)
        live.changed()  # a trial stored within the interval: its report waits
        raise KeyboardInterrupt
    assert len(log) == 2 and log[1].end is not None  # the final report ran before the interrupt went on
    # nothing finished at all (interrupted before any trial): no final report
    with (pytest.raises(KeyboardInterrupt),
          live_report(Path("study"), True, 60, Console(file=io.StringIO()), lambda: False)):
        raise KeyboardInterrupt
    assert len(log) == 2


def test_an_interrupt_during_the_final_report_stops_it():
    class Interrupted(FakeJob):
        """Ctrl-C comes while the sweep (the main thread) waits for its final report."""

        def wait(self, timeout):
            if threading.current_thread() is threading.main_thread():
                raise KeyboardInterrupt
            return super().wait(timeout)

    log: list[FakeJob] = []
    live = LiveReport(60, Console(file=io.StringIO()), lambda: Interrupted(log, threading.Lock()))
    live.start().changed()
    assert wait_for(lambda: log and log[0].end is not None, timeout=5, every=0.01)
    live.changed()
    with pytest.raises(KeyboardInterrupt):
        live.finish(final=True)
    assert len(log) == 2 and log[1].stopped and not log[0].stopped


def test_a_report_that_cannot_start_is_a_failed_report():
    def refuse():
        raise OSError(24, "Too many open files")

    err = io.StringIO()
    live = LiveReport(0.05, Console(file=err, width=300), refuse).start()
    live.changed()
    live.finish(final=True)
    assert err.getvalue().splitlines() == [
        "warning: the live report failed (exit 1: it could not start: [Errno 24] Too many open files); the sweep goes on"]


def test_a_copy_pickled_with_the_callbacks_is_inert():
    import pickle

    live, log, _ = _live(every=0.05)
    copy = pickle.loads(pickle.dumps(live))
    copy.changed()
    time.sleep(0.2)
    assert log == [] and copy.schedule.changes == 1
    live.finish(final=False)


def test_the_end_of_tunes_run_empties_running_json_and_is_a_change():
    """Trials stopped by Ctrl-C or SIGTERM are not running any more: the final report must not say so."""
    from stability.sweep.callbacks import StoreCallback

    store = SimpleNamespace(running=[])
    store.write_running = lambda trials: store.running.append(dict(trials))
    changes = []
    callback = StoreCallback("s", store, [], lambda row: None, lambda: changes.append(1))
    callback.stopped()
    assert store.running == [] and changes == []  # nothing was running: nothing to say
    callback.running = {"t1": {"epoch": 2}, "t2": {"epoch": 1}}
    callback.stopped()
    assert store.running == [{}] and changes == [1] and callback.running == {}
