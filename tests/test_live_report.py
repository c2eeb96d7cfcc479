"""`python -m stability.sweep --report`: the report rewritten while a study runs. The schedule and the
report thread are tested with fake report jobs (no Ray, no report); one real sweep on a local Ray
cluster checks the pages written while the trials ran, the final page and that no report process
is left behind."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, TESTS, run_cli, wait_for
from rich.console import Console

from stability.sweep import live_report as lr
from stability.sweep.live_report import (
    LiveReport,
    ReportJob,
    Schedule,
    live_report,
    report_path,
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


def test_triggers_coalesce_at_most_one_report_per_interval_never_two_at_once():
    live, log, err = _live(every=0.3, duration=0.05)
    stop = time.monotonic() + 1.25
    while time.monotonic() < stop:  # a trial stored every 10 ms
        live.changed()
        time.sleep(0.01)
    live.finish(final=True)
    starts = [job.start for job in log]
    assert 3 <= len(log) <= 7, starts  # ~125 changes: one report at once, then one per 0.3 s, one final
    assert all(b - a >= 0.3 - 0.05 for a, b in itertools.pairwise(starts[:-1])), starts  # the final one may come sooner
    assert not any(job.overlapped for job in log)
    assert live.schedule.completed == live.schedule.changes and live.written
    assert err.getvalue() == ""


def test_no_change_no_report_and_a_report_is_due_at_once_after_a_quiet_spell():
    live, log, _ = _live(every=0.5)
    time.sleep(0.3)
    assert log == []  # nothing stored: nothing to draw
    live.changed()
    assert wait_for(lambda: len(log) == 1 and log[0].end is not None, timeout=5, every=0.01)
    time.sleep(0.6)
    assert len(log) == 1  # still nothing new
    changed_at = time.monotonic()
    live.changed()
    assert wait_for(lambda: len(log) == 2, timeout=5, every=0.01)
    assert log[1].start - changed_at < 0.4  # at once: the interval since the last start had passed
    live.finish(final=True)
    assert len(log) == 2  # the last report showed every change: no final one


def test_finish_waits_for_a_running_report_that_shows_everything():
    live, log, _ = _live(every=0.1, duration=0.5)
    live.changed()
    assert wait_for(lambda: log, timeout=5, every=0.01)
    live.finish(final=True)
    assert len(log) == 1 and not log[0].stopped and log[0].end is not None and live.written


def test_finish_interrupts_a_stale_report_then_writes_the_final_one():
    live, log, _ = _live(every=0.1, duration=1.0)
    live.changed()
    assert wait_for(lambda: log, timeout=5, every=0.01)
    live.changed()  # a trial stored after the running report started
    began = time.monotonic()
    live.finish(final=True)
    assert [job.stopped for job in log] == [True, False]
    assert time.monotonic() - began < 1.5  # one report's time (plus polling), not the rest of the stale one too
    assert live.schedule.completed == live.schedule.changes == 2


def test_finish_without_final_only_stops_the_running_report():
    live, log, _ = _live(every=0.1, duration=5)
    live.changed()
    assert wait_for(lambda: log, timeout=5, every=0.01)
    began = time.monotonic()
    live.finish(final=False)
    assert time.monotonic() - began < 1 and len(log) == 1 and log[0].stopped


def test_failed_reports_are_said_once_and_the_block_goes_on(monkeypatch):
    """Every report fails (exit 2): the sweep's block runs to its end, stderr gets one line."""
    log: list[FakeJob] = []
    lock = threading.Lock()
    monkeypatch.setattr(lr, "ReportJob", lambda command: FakeJob(log, lock, code=2, message="error: no trials"))
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
    monkeypatch.setattr(lr, "ReportJob", lambda command: FakeJob(log, lock))
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


# --- real report processes -------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _sleeper(ignore_sigint: bool = False) -> ReportJob:
    """A job that says 'ready' on stderr (its Python is up, its SIGINT handling set), then sleeps."""
    code = ("import signal, sys, time; " + ("signal.signal(signal.SIGINT, signal.SIG_IGN); " if ignore_sigint else "")
            + "print('ready', flush=True, file=sys.stderr); time.sleep(60)")
    job = ReportJob([sys.executable, "-c", code])
    assert wait_for(lambda: os.fstat(job._err.fileno()).st_size > 0, timeout=30, every=0.02)
    return job


def test_report_job_runs_at_the_lowest_priority_in_its_own_session_and_is_stopped():
    job = _sleeper()
    try:
        assert os.getpriority(os.PRIO_PROCESS, job.proc.pid) == 19
        assert os.getsid(job.proc.pid) == job.proc.pid != os.getsid(0)  # a Ctrl-C at the terminal is not its
        assert job.wait(0.05) is None
        job.stop(grace=10)
        assert job.proc.returncode == -signal.SIGINT  # interrupted, so it removes its temporary file
    finally:
        job.proc.kill()
    job = _sleeper(ignore_sigint=True)  # one that ignores SIGINT is killed after the grace time
    job.stop(grace=0.2)
    assert job.proc.returncode == -signal.SIGKILL and not _alive(job.proc.pid)


def test_a_failing_report_process_gives_its_last_stderr_line(tmp_path):
    """The real report command on a folder without results: it fails, the warning names why."""
    err = io.StringIO()
    empty = tmp_path / "empty"
    empty.mkdir()
    with live_report(empty, True, 0.05, Console(file=err, width=400), lambda: True) as live:
        live.changed()
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: the live report failed (exit 2: error: "), lines
    assert str(empty) in lines[0] and not (empty / "report.html").exists() and not list(empty.glob(".tmp-*"))


def test_dry_run_with_report_only_says_it_would(tmp_path):
    """No lock, no folder, no Ray, no report: one line on stderr."""
    out = run_cli("stability.sweep", TINY, "--dry-run", "--report", "--storage", str(tmp_path / "runs"),
                  env={**os.environ, "RAY_TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == f"--report: a run would rewrite {tmp_path / 'runs'}/tiny/report.html as trials finish"
    assert not (tmp_path / "runs").exists()
    assert report_path("s3://b/runs/?endpoint_override=h:9", "tiny") == "s3://b/runs/tiny/report.html?endpoint_override=h:9"


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_report_every_must_be_a_positive_number(value, capsys):
    from stability.sweep.__main__ import parse_args

    assert parse_args([TINY, "--report"]).report_every == 30
    assert parse_args([TINY, "--report", "--report-every", "0.5"]).report_every == 0.5
    with pytest.raises(SystemExit) as exc:
        parse_args([TINY, "--report", "--report-every", value])
    assert exc.value.code == 2 and "--report-every: expected a positive number of seconds" in capsys.readouterr().err


# --- one real sweep --------------------------------------------------------------------------------

def _report_processes(study: Path) -> list[int]:
    """Live processes running the report of `study`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"stability.report" in cmdline and str(study).encode() in cmdline and _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _trials_in(page: str) -> int:
    """The number of trials a report page draws (its subtitle: 'N trials (...)')."""
    return int(re.search(r"(\d+) trials \(", page).group(1))


@pytest.mark.ray
def test_sweep_with_report_rewrites_the_page_while_trials_run(ray_cluster, tmp_path):
    """8 trials one at a time (a core stays free for the report): pages appear while trials are still
    to run, each a whole page; the final page draws all 8; no report process outlives the sweep."""
    storage = tmp_path / "runs"
    study = storage / "live"
    args = [sys.executable, "-m", "stability.sweep", TINY, "--address", ray_cluster["address"], "--storage",
            str(storage), "--set", "name=live", "--set", "epochs=3", "--set", "resources.max_concurrent=1",
            "--report", "--report-every", "0.5"]
    driver = subprocess.Popen(args, cwd=REPO, env=ray_cluster["env"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    seen: list[tuple[int, str]] = []  # (trials stored when a new page was seen, the page)
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(driver.stderr), daemon=True)
    reader.start()
    page_id, niceness = None, {}  # report process -> its niceness when last seen
    try:
        while driver.poll() is None:
            for pid in _report_processes(study):
                with contextlib.suppress(OSError):
                    niceness[pid] = os.getpriority(os.PRIO_PROCESS, pid)
            try:
                stat = (study / "report.html").stat()
                if (stat.st_ino, stat.st_mtime_ns) != page_id:
                    page_id = (stat.st_ino, stat.st_mtime_ns)
                    page = (study / "report.html").read_text()  # then count: the page shows no more than that
                    seen.append((len(list((study / "trials.parquet").glob("*.parquet"))), page))
            except FileNotFoundError:
                pass
            time.sleep(0.1)
        driver.wait(timeout=300)
    finally:
        driver.kill()
    reader.join(timeout=10)
    err = "".join(errors)
    assert driver.returncode == 0, err[-3000:]
    assert "live report failed" not in err
    assert f"report: {study / 'report.html'}" in err
    during = [(stored, page) for stored, page in seen if stored < 8]
    assert during, f"no report while trials ran (pages seen with {[s for s, _ in seen]} trials stored)"
    for stored, page in during:  # each seen while trials were missing: a whole page of fewer trials
        assert 1 <= _trials_in(page) <= stored < 8
        assert "Stability report: live" in page and '<div id="fig-' in page and page.rstrip().endswith("</html>")
    final = (study / "report.html").read_text()
    assert _trials_in(final) == 8 and "still running" not in final
    assert len(re.findall(r'<div id="fig-\d+"', final)) >= len(re.findall(r'<div id="fig-\d+"', during[0][1])) > 0
    assert niceness and set(niceness.values()) == {19}, niceness  # the lowest priority, below the trials'
    assert _report_processes(study) == []
    assert not list(study.glob(".tmp-*"))
