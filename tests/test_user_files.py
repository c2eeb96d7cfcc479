"""A research folder often holds an `analysis.py`, a `search_spaces.py` or a `benchmarks.py`. Run from
there, every command and the Python API work as anywhere else: the project's packages are
`stability.analysis` and `stability.search_spaces` (the repository's top-level `analysis/` and
`search_spaces/` folders), and `benchmarks` is not installed (it runs from a checkout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from test_report import make_study

USER_FILES = ("analysis", "search_spaces", "benchmarks")


@pytest.fixture
def research_folder(tmp_path):
    folder = tmp_path / "research"
    folder.mkdir()
    for name in USER_FILES:  # a file the project imported by mistake ends the process saying so
        (folder / f"{name}.py").write_text(f"raise SystemExit('the user file {name}.py was imported')\n")
    return folder


def run_in(folder, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert "user file" not in out.stdout + out.stderr, out.stdout[-2000:] + out.stderr[-2000:]
    return out


def test_every_command_and_the_python_api_ignore_a_user_s_files_of_the_same_names(research_folder, tmp_path):
    for command in (["stability.sweep", "--help"], ["stability.report", "--help"], ["stability.results", "--help"],
                    ["stability.data", "--help"], ["stability.train", "--help"]):
        out = run_in(research_folder, "-m", *command)
        assert out.returncode == 0 and out.stdout.startswith("usage: python -m " + command[0]), out.stderr[-2000:]
    listed = run_in(research_folder, "-m", "stability.sweep", "--list")
    assert listed.returncode == 0 and "cifar10_lr_wd" in listed.stdout  # the built-in studies are found
    dry = run_in(research_folder, "-m", "stability.sweep", "default", "--dry-run", "--storage", str(research_folder))
    assert dry.returncode == 0 and json.loads(dry.stdout.splitlines()[-1])["study"] == "default", dry.stderr[-2000:]

    study = make_study(tmp_path / "runs", samples=2, failed=False)  # a finished study, written by the real store
    report = run_in(research_folder, "-m", "stability.report", str(study), "--out",
                    str(research_folder / "report.html"), "--json")
    assert report.returncode == 0, report.stderr[-2000:]
    assert "verdicts" in json.loads(report.stdout) and (research_folder / "report.html").stat().st_size > 0

    api = run_in(research_folder, "-c", "import json, stability; s = stability.open_study(" + repr(str(study))
                 + "); print(json.dumps(sorted(s.summary())))")
    assert api.returncode == 0 and "verdicts" in json.loads(api.stdout), api.stderr[-2000:]


def test_the_installed_names_live_under_stability():
    import stability.analysis
    import stability.search_spaces

    assert os.path.samefile(os.path.dirname(stability.analysis.__file__), REPO / "analysis")
    assert os.path.samefile(os.path.dirname(stability.search_spaces.__file__), REPO / "search_spaces")
    assert "analysis" not in sys.modules and "search_spaces" not in sys.modules  # nothing imports the bare names
