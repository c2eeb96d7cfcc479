"""The Python API (docs/python-api.md): `stability.open_study` gives what the report computes,
`stability.run_study` runs a sweep in this process, bad input is one `StudyError` with the command
line's message, `import stability` stays cheap, and the page's code blocks run as written."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import plotly.graph_objects as go
import pytest

import stability
from conftest import REPO, TESTS, run_cli, run_main
from test_report import make_study

DOC = REPO / "docs" / "python-api.md"
TINY = str(TESTS / "data" / "tiny.yaml")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("runs"), samples=5)


def cli_error(module: str, *args: str) -> str:
    """The one line a command prints for bad input, after its `error: `."""
    out = run_main(importlib.import_module(f"{module}.__main__").main, *args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0].removeprefix("error: ")


def frames_inside(exc: BaseException) -> list[str]:
    """The files of the traceback's frames below this test's own."""
    return [frame.filename for frame in traceback.extract_tb(exc.__traceback__)[1:]]


def test_import_is_cheap_and_exports_the_api():
    code = ("import sys, stability\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'plotly', 'pandas'))\n"
            "print(heavy, callable(stability.open_study), callable(stability.run_study))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] True True"
    assert {"open_study", "run_study", "Study", "StudyError"} <= set(dir(stability))
    with pytest.raises(AttributeError):
        stability.no_such_name  # noqa: B018


def test_open_study_gives_the_reports_summary_verdicts_and_figures(study_dir, tmp_path):
    study = stability.open_study(study_dir)
    assert isinstance(study, stability.Study)
    assert len(study.trials) == 2 * 2 * 5 + 1 and set(study.trials["model"]) == {"vit_p_tiny", "vit_c_tiny"}
    assert len(study.curves) == 2 * 2 * 5 * 10
    out = run_cli("stability.report", str(study_dir), "--json", "--out", str(tmp_path / "r.html"), timeout=300)
    assert out.returncode == 0, out.stderr
    assert study.summary() == json.loads(out.stdout)  # exactly what --json prints
    summary = study.summary()
    summary["groups"].clear()
    assert study.summary()["groups"], "each call gives a new dict"
    verdicts = study.verdicts
    assert len(verdicts) == len(json.loads(out.stdout)["verdicts"]) > 0
    assert verdicts["sentence"].str.len().gt(0).all()
    figures = study.figures
    assert "edf_adamw_10ep" in figures and "hparams_sgd_10ep" in figures
    assert all(isinstance(f, go.Figure) for f in figures.values())
    assert study.figure("edf_adamw_10ep") is figures["edf_adamw_10ep"]
    assert study.figure("edf_adamw_10ep")._repr_mimebundle_ is not None  # Jupyter shows it inline
    with pytest.raises(KeyError, match="edf_adamw_10ep"):
        study.figure("nope")
    assert study.spec["name"] == "synthetic"


@pytest.mark.parametrize("where", ["missing", "empty", "file"])
def test_a_path_without_a_study_is_one_error_with_the_clis_line(tmp_path, where):
    path = tmp_path / "study"
    if where == "empty":
        path.mkdir()
    elif where == "file":
        path.write_text("not a study")
    expected = cli_error("stability.report", str(path))
    with pytest.raises(stability.StudyError) as info:
        stability.open_study(str(path))
    assert str(info.value) == expected
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert all(os.sep + os.path.join("stability", "api", "") in f for f in frames_inside(info.value))


def test_an_invalid_spec_is_one_error_with_the_clis_line_and_nothing_runs(tmp_path):
    expected = cli_error("stability.sweep", TINY, "--storage", str(tmp_path / "cli"), "--set", "samples=0")
    with pytest.raises(stability.StudyError) as info:
        stability.run_study(TINY, storage=tmp_path / "api", samples=0)
    assert str(info.value) == expected
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert all(os.sep + os.path.join("stability", "api", "") in f for f in frames_inside(info.value))
    assert not (tmp_path / "api").exists()
    import ray

    assert not ray.is_initialized()


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


@pytest.mark.ray
def test_the_python_api_page_runs_as_written(tmp_path, monkeypatch):
    """Every Python block of docs/python-api.md, in order, in one namespace, from a folder holding a
    finished default study; `run_study` runs its two one-epoch trials on a private Ray instance."""
    make_study(tmp_path / "runs", name="default", samples=5)
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102
    shown = printed.getvalue()
    assert "runs/typo: no such results folder" in shown
    assert "quick.yaml: samples: Input should be greater than 0" in shown
    assert namespace["summary"]["verdicts"] and isinstance(namespace["study"].figure("edf_adamw_10ep"), go.Figure)
    quick = namespace["quick"]
    assert isinstance(quick, stability.Study)
    assert len(quick.trials) == 2 and set(quick.trials["status"]) <= {"ok", "diverged"}
    assert sorted(quick.curves["epoch"]) == [1, 1]  # --set epochs=1 reached the sweep
    assert (tmp_path / "runs" / "quick" / "study.yaml").is_file()
    import ray

    assert not ray.is_initialized()  # the private instance was stopped
