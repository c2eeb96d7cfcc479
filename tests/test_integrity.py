"""Hostile input and store integrity: a second sweep of a study refused (the lock itself is tested in
test_lock.py), a damaged study.yaml refused in one line, `report --out` never replacing a link or a
special file, and on a real cluster: two sweeps at once, a torn result file re-run (a killed
driver's lock: test_sweep.py; damaged files in general: test_open_format.py)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, TESTS, run_cli
from stability.results.lock import StudyLock
from stability.results.store import ResultsStore, StoreError
from stability.results.tables import TRIAL_KEYS, TableFile, check_file
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
def test_two_sweeps_of_one_study_at_once_only_one_runs(ray_cluster, sweep, tmp_path):
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
    again = sweep(TINY, "--storage", storage, *SMALL, "--set", f"seed={winner}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{victim} is damaged" in again.stderr and "1 of 2 trials already finished; running 1" in again.stderr
    assert len((study / "damaged" / "trials.parquet" / victim.name).read_bytes()) == 100
    assert check_file(TableFile(victim, 0.0), TRIAL_KEYS)[1] is None and len(pd.read_parquet(study / "trials.parquet")) == 2
