"""`python -m stability.sweep --report` with real processes: the report job (priority, session,
interruption), the report command's failures, the flags, and one real sweep on a local Ray cluster
that checks the pages written while the trials ran, the final page and that no report process is
left behind. The schedule and the report thread are in test_live_report.py."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, TESTS, run_main, wait_for
from rich.console import Console

from stability.results.lock import process_state
from stability.sweep.__main__ import main as sweep_main
from stability.sweep.live_report import (
    ReportJob,
    live_report,
    report_path,
)

TINY = str(TESTS / "data" / "tiny.yaml")


# --- real report processes -------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    return process_state(pid) == "alive"


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
        job.stop(grace=120)  # at the lowest priority it may wait long for the CPU on a busy machine
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
    out = run_main(sweep_main, TINY, "--dry-run", "--report", "--storage", tmp_path / "runs")
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
    """Live processes running the report of `study` (named in their environment, not their command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if (b"stability.report" in cmdline and f"STABILITY_REPORT_STUDY={study}".encode() in environ
                    and _alive(int(entry.name))):
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


def test_the_report_process_gets_the_study_from_its_environment_not_its_command_line(tmp_path, monkeypatch, capsys):
    """A URI may hold credentials; any user of the machine reads a command line (`ps`), only its owner
    reads a process's environment: the live report's command names `env:` variables instead."""
    from stability.report.__main__ import main as report_main
    from stability.results.storage import location
    from stability.sweep.live_report import report_command
    from test_report import make_study

    command, where = report_command(location("s3://KEY:SECRET@bucket/runs?endpoint_override=127.0.0.1:9") / "tiny")
    assert not [word for word in command if "SECRET" in word or "KEY" in word]
    assert where["STABILITY_REPORT_STUDY"].startswith("s3://KEY:SECRET@bucket/runs/tiny")
    study = make_study(tmp_path, samples=2, failed=False)
    monkeypatch.setenv("STABILITY_REPORT_STUDY", str(study))
    monkeypatch.setenv("STABILITY_REPORT_OUT", str(tmp_path / "page.html"))
    assert report_main(command[3:]) == 0 and (tmp_path / "page.html").is_file()
    capsys.readouterr()
    monkeypatch.delenv("STABILITY_REPORT_STUDY")
    with pytest.raises(SystemExit) as info:
        report_main(command[3:])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: env:STABILITY_REPORT_STUDY: the environment variable "
                                               "STABILITY_REPORT_STUDY is not set")
